"""Re-embedding: every face embedded again with the gallery's (new) model into a new generation, then one switch.

Each batch commits on its own, so enrollment and deletion go on meanwhile and a run killed at any point resumes
where it stopped. When every face has its new vector, one transaction swaps the embeddings in, records the
generation, and the keeper (:mod:`index.keeper`) serves the new generation and drops the old one's vectors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from index.records import FaceOwner, NewFace, ReembedReport, StoredCrop, unit_vectors
from index.spaces import Placed
from index.store import Conn, Store, placed_rows

if TYPE_CHECKING:
    from index.gallery import Gallery

Embed = Callable[[list[StoredCrop]], list[np.ndarray | None]]


def _progress(store: Store) -> tuple[int, int]:
    """(faces re-embedded, faces)."""
    with store.read(consistent=True) as c:
        return (int(c.execute("SELECT COUNT(*) FROM reembedding").fetchone()[0]),
                int(c.execute("SELECT COUNT(*) FROM faces").fetchone()[0]))


def _pending(store: Store, limit: int) -> list[StoredCrop]:
    """The crops of faces not yet re-embedded, by id."""
    with store.read() as c:
        rows = c.execute(
            "SELECT f.id, i.key, f.source, f.source_geometry, f.thumbnail FROM faces f "
            "LEFT JOIN identities i ON i.id = f.identity_id LEFT JOIN reembedding r ON r.face_id = f.id "
            "WHERE r.face_id IS NULL ORDER BY f.id LIMIT ?", (limit,)).fetchall()
    return [StoredCrop(int(r[0]), r[1], None if r[2] is None else bytes(r[2]), json.loads(r[3]) if r[3] else None,
                       None if r[4] is None else bytes(r[4])) for r in rows]


def _save(c: Conn, rows: Sequence[tuple[int, bytes | None]]) -> None:
    """Store new embeddings (None: no usable crop) of faces that still exist."""
    ids = [f for f, _ in rows]
    alive = {int(r[0]) for r in c.execute(
        f"SELECT id FROM faces WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else set()
    c.executemany("INSERT INTO reembedding(face_id, embedding) VALUES (?, ?) ON CONFLICT (face_id) DO NOTHING",
                  [(f, e) for f, e in rows if f in alive])


def _start(store: Store, c: Conn, target: str) -> bool:
    """Begin re-embedding for ``target`` (model and dimension) unless a run for it is under way; True if new."""
    if store.get_meta("reembed_target", c) == target:
        return False
    c.execute("DELETE FROM reembedding")
    store.set_meta(c, "reembed_target", target)
    return True


def _unembedded(c: Conn) -> int:
    """Faces not yet re-embedded."""
    return int(c.execute("SELECT COUNT(*) FROM faces f LEFT JOIN reembedding r ON r.face_id = f.id "
                         "WHERE r.face_id IS NULL").fetchone()[0])


def _unrecoverable(c: Conn) -> list[FaceOwner]:
    """The faces the new model found no usable crop for."""
    return [FaceOwner(int(i), None if k is None else str(k)) for i, k in c.execute(
        "SELECT f.id, i.key FROM faces f LEFT JOIN identities i ON i.id = f.identity_id "
        "JOIN reembedding r ON r.face_id = f.id WHERE r.embedding IS NULL ORDER BY f.id")]


def _reembedded(c: Conn, dim: int) -> Placed:
    """The faces with their new embeddings and their spaces, by face id."""
    rows = c.execute("SELECT r.face_id, r.embedding, f.identity_id IS NOT NULL, f.photo_id IS NOT NULL "
                     "FROM reembedding r JOIN faces f ON f.id = r.face_id WHERE r.embedding IS NOT NULL "
                     "ORDER BY r.face_id").fetchall()
    return placed_rows(rows) if rows else Placed.empty(dim)


def _switch_embeddings(store: Store, c: Conn, model_version: str, dim: int, generation: int, faces: int
                       ) -> str | None:
    """Swap the re-embedded vectors in and record the generation; returns the previous model version."""
    c.execute("UPDATE faces SET model_version = ?, embedding = "
              "(SELECT r.embedding FROM reembedding r WHERE r.face_id = faces.id)", (model_version,))
    c.execute("DELETE FROM reembedding")
    store.delete_meta(c, "reembed_target")
    previous = store.get_meta("model_version", c)
    store.set_meta(c, "model_version", model_version)
    store.set_meta(c, "dim", str(dim))
    store.set_meta(c, "generation", str(generation))
    c.execute("INSERT INTO generations(id, model_version, dim, faces, switched_at) VALUES (?, ?, ?, ?, ?)",
              (generation, model_version, dim, faces, time.time()))
    return previous


def status(store: Store) -> dict[str, Any] | None:
    """Progress of a re-embedding under way (in this or another process), or None."""
    target = store.get_meta("reembed_target")
    if target is None:
        return None
    done, total = _progress(store)
    return {"target_model": json.loads(target)[0], "done": done, "total": total}


def reembed(gallery: Gallery, embed: Embed, *, batch: int = 64, progress: Callable[[int, int], None] | None = None,
            drop_unrecoverable: bool = False, actor: str | None = None) -> ReembedReport:
    """Embed every face again with ``gallery``'s model (its ``model_version`` and ``dim``).

    ``embed(crops) -> one float32 (D,) vector per crop, None where no stored crop serves the model`` is the model
    side's. Faces with no usable crop block the switch and are reported, unless ``drop_unrecoverable`` deletes them.
    """
    t0 = time.monotonic()
    store = gallery.store
    if not gallery.needs_reembed:
        return ReembedReport(gallery.model_version, gallery.count()[1], 0, [], False, gallery.generation, 0.0)
    with gallery.locks.mutex, store.transaction() as c:
        if _start(store, c, json.dumps([gallery.model_version, gallery.dim])):  # a new run, or for another model
            store.audit(c, "reembed_started", actor=actor, to_model=gallery.model_version,
                        from_model=store.get_meta("model_version", c))
    while True:
        while crops := _pending(store, batch):
            vecs = embed(crops)
            new = [(crop.face_id, None if v is None else unit_vectors([NewFace(v)], gallery.dim)[0].tobytes())
                   for crop, v in zip(crops, vecs, strict=True)]
            with gallery.locks.mutex, store.transaction() as w:  # skipped if the face went meanwhile
                _save(w, new)
            if progress is not None:
                progress(*_progress(store))
        report = _switch(gallery, drop_unrecoverable, actor)
        if report is not None:
            report.seconds = time.monotonic() - t0
            return report


def _switch(gallery: Gallery, drop_unrecoverable: bool, actor: str | None) -> ReembedReport | None:
    """Swap the new embeddings in, atomically; None if faces were enrolled since the last batch."""
    store, keeper = gallery.store, gallery.keeper
    with gallery.locks.writing():
        with store.transaction() as c:
            if _unembedded(c):
                return None
            unrecoverable = _unrecoverable(c)
            total = store.count_faces(c)
            if unrecoverable and not drop_unrecoverable:
                return ReembedReport(gallery.model_version, total, total - len(unrecoverable), unrecoverable,
                                     False, keeper.generation, 0.0)
            store.delete_faces(c, [f.face_id for f in unrecoverable], event="delete_face", actor=actor,
                               reason="no crop to re-embed")
            faces = _reembedded(c, gallery.dim)
            old_model = (store.get_meta("model_version", c), int(store.get_meta("dim", c) or 0))
            generation = keeper.prepare_switch(c, faces, store.seq(c))
            previous = _switch_embeddings(store, c, gallery.model_version, gallery.dim, generation, len(faces))
            store.audit(c, "reembed", actor=actor, from_model=previous, to_model=gallery.model_version,
                        generation=generation, faces=len(faces))
        keeper.switched(old_model)
    store.erase_deleted()
    return ReembedReport(gallery.model_version, total, len(faces), unrecoverable, True, generation, 0.0)
