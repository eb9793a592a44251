"""What the erasure tests look for: a face's stored bytes, searched in every file under a data folder."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import psycopg

WINDOW = 32


def face_bytes(db: Path | str, face_ids: list[int], *, hnsw: bool = False) -> dict[str, bytes]:
    """The stored bytes of these faces (embedding, chip, source crop, and a re-embedding under way), read
    from the database before they are deleted: ``"<face id>/<column>" -> bytes``. ``hnsw``: also the float16
    copy of each embedding that an HNSW graph walks (``"<face id>/embedding-fp16"``), encoded by FAISS's own
    float16 codec (it rounds some values differently from numpy's). ``db``: the SQLite file or a PostgreSQL URL."""
    out: dict[str, bytes] = {}
    con: Any = psycopg.connect(db) if isinstance(db, str) else sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    mark = "%s" if isinstance(db, str) else "?"
    try:
        for i in face_ids:
            row = con.execute(f"SELECT embedding, thumbnail, source FROM faces WHERE id = {mark}", (i,)).fetchone()
            assert row is not None, f"face {i} is not stored"
            for name, blob in zip(("embedding", "chip", "source"), row, strict=True):
                if blob is not None:
                    out[f"{i}/{name}"] = bytes(blob)
            if hnsw:
                out[f"{i}/embedding-fp16"] = fp16(bytes(row[0]))
            new = con.execute(f"SELECT embedding FROM reembedding WHERE face_id = {mark}", (i,)).fetchone()
            if new is not None and new[0] is not None:
                out[f"{i}/reembedding"] = bytes(new[0])
    finally:
        con.close()
    return out


def fp16(embedding: bytes) -> bytes:
    x = np.frombuffer(embedding, dtype=np.float32)[None, :]
    codec = faiss.IndexScalarQuantizer(x.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    return bytes(codec.sa_encode(np.ascontiguousarray(x))[0])


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
