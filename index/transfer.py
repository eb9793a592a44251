"""Moving faces out of and into a gallery: a whole gallery as one SQLite file (export, import) and what is stored of
one identity or some faces (subject access)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from index.errors import GalleryMismatch
from index.records import IdentityRecord, StoredFace
from index.sqlite import read_export

if TYPE_CHECKING:
    from index.gallery import Gallery

# what an export file holds: every table a gallery's content lives in, with the columns copied
EXPORTED = {
    "identities": "id, key, metadata, created_at",
    "photos": "id, key, album, metadata, width, height, created_at",
    "faces": "id, identity_id, embedding, model_version, box, score, sha256, thumbnail, created_at, source, "
             "source_geometry, photo_id, cluster_id",
}


def export(gallery: Gallery, path: Path) -> None:
    """Write the whole gallery (identities, photos, faces, embeddings, crops) to one SQLite file."""
    from index.sqlite import SqliteStore  # the export format is an embedded-tier gallery file

    path = Path(path)
    path.unlink(missing_ok=True)
    dst = SqliteStore(path)
    try:
        with gallery.store.read(consistent=True) as c, dst.transaction() as w:
            dst.set_meta(w, "dim", str(gallery.dim))
            dst.set_meta(w, "model_version", gallery.model_version)
            for table, cols in EXPORTED.items():
                cur = c.execute(f"SELECT {cols} FROM {table} ORDER BY id")
                while rows := cur.fetchmany(1000):
                    w.executemany(f"INSERT INTO {table}({cols}) VALUES ({','.join('?' * (cols.count(',') + 1))})",
                                  [tuple(r) for r in rows])
    finally:
        dst.close()


def import_(gallery: Gallery, path: Path) -> tuple[int, int]:
    """Merge an exported gallery: identities by key, faces not already present (same identity and image hash).
    Returns (identities touched, faces added)."""
    try:
        meta, metadata, faces = read_export(Path(path))
    except sqlite3.DatabaseError as e:
        raise GalleryMismatch(f"not a FaceSearch gallery export: {e}") from e
    if int(meta.get("dim", 0)) != gallery.dim or meta.get("model_version") != gallery.model_version:
        raise GalleryMismatch(f"export was made by model {meta.get('model_version')} "
                              f"({meta.get('dim')}-d); this gallery uses {gallery.model_version}")
    have = gallery.store.identity_sha256s()
    items = [(key, face) for key, face in faces if face.sha256 is None or (key, face.sha256) not in have]
    if items:
        gallery.add_many(items, metadata={k: m for k, m in metadata.items() if m})
    return len({k for k, _ in items}), len(items)


def identity_export(gallery: Gallery, identity: str) -> tuple[IdentityRecord, Iterator[dict[str, Any]]]:
    """Everything stored about one identity: its record and, lazily, each face (:func:`export_faces`)."""
    record = gallery.get_identity(identity)
    with gallery.store.read() as c:
        ident = gallery.store.identity_id(c, identity)
        ids = gallery.store.identity_face_ids(c, ident) if ident is not None else []
    return record, export_faces(gallery, ids)


def export_faces(gallery: Gallery, ids: list[int]) -> Iterator[dict[str, Any]]:
    """Each face with its crops and embedding (subject access). The faces are read one query each, so the
    iterator may be consumed from any thread; a face deleted meanwhile is skipped."""
    for face_id in ids:
        with gallery.store.read() as c:
            r = c.execute("SELECT id, model_version, box, score, sha256, created_at, source_geometry, embedding, "
                          "thumbnail, source FROM faces WHERE id = ?", (face_id,)).fetchone()
        if r is not None:
            yield dataclasses.asdict(StoredFace(
                int(r[0]), r[1], json.loads(r[2]) if r[2] else None, r[3], r[4], r[5],
                json.loads(r[6]) if r[6] else None, np.frombuffer(bytes(r[7]), dtype=np.float32).tolist(),
                None if r[8] is None else bytes(r[8]), None if r[9] is None else bytes(r[9])))
