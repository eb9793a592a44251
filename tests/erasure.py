"""What the erasure tests look for: a face's stored bytes, searched in every file under a data folder."""

from __future__ import annotations

import sqlite3
from pathlib import Path

WINDOW = 32


def face_bytes(db: Path, face_ids: list[int]) -> dict[str, bytes]:
    """The stored bytes of these faces (embedding, chip, source crop, and a re-embedding under way), read
    from the database before they are deleted: ``"<face id>/<column>" -> bytes``."""
    out: dict[str, bytes] = {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for i in face_ids:
            row = con.execute("SELECT embedding, thumbnail, source FROM faces WHERE id = ?", (i,)).fetchone()
            assert row is not None, f"face {i} is not stored"
            for name, blob in zip(("embedding", "chip", "source"), row, strict=True):
                if blob is not None:
                    out[f"{i}/{name}"] = bytes(blob)
            new = con.execute("SELECT embedding FROM reembedding WHERE face_id = ?", (i,)).fetchone()
            if new is not None and new[0] is not None:
                out[f"{i}/reembedding"] = bytes(new[0])
    finally:
        con.close()
    return out


def windows(blob: bytes) -> list[bytes]:
    """Slices of a blob that any copy of it holds whole. SQLite splits a long row over overflow pages (4-byte
    headers between 4 KiB chunks), so the blob itself need not appear in one piece: look for 32-byte windows
    spread over it. An image's first bytes (a JPEG's markers and quantisation tables, a WebP's header) are
    shared by every image of the same encoder settings and are skipped; its coded pixels are unique to it."""
    start = len(blob) // 3 if blob[:2] == b"\xff\xd8" or blob[:4] == b"RIFF" else 0
    span = len(blob) - start - WINDOW
    return [blob[start + span * k // 7 : start + span * k // 7 + WINDOW] for k in range(8)]


def files_holding(folder: Path, stored: dict[str, bytes]) -> dict[str, list[str]]:
    """``"<face id>/<column>" -> the files under folder holding any window of it`` (only those found)."""
    found: dict[str, list[str]] = {}
    contents = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    for key, blob in stored.items():
        for path, data in contents.items():
            if any(w in data for w in windows(blob)):
                found.setdefault(key, []).append(str(path.relative_to(folder)))
    return found
