"""The one write path of a gallery's faces, which its identities (:class:`index.gallery.Gallery`) and its photos
(:class:`index.photos.Photos`) share: the store first, then the indexes of the faces' spaces, under the write lock;
a delete erases every copy of the faces before it returns.

Deletes of many faces (an album, a cluster, a retention sweep) go in batches of ``DELETE_BATCH`` that release the
locks between them, so searches and other writes go on meanwhile; each batch is erased from the snapshots in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from index import photo_queries
from index.errors import GalleryMismatch
from index.keeper import Keeper, model_changed
from index.locks import Locks
from index.records import NewFace, unit_vectors, validate_key
from index.spaces import Placed
from index.store import ADD, Conn, FaceRow, Store

DELETE_BATCH = 2_000  # faces per write transaction of a large delete (each batch holds the write lock alone)
# ``before(c)`` runs first in the add's transaction and returns the photo row the faces belong to (None: none);
# ``after(c, ids, vectors)`` runs last in it, with the new faces' ids and embeddings
Before = Callable[[Conn], int | None]
After = Callable[[Conn, list[int], np.ndarray], None]


class Writes:
    def __init__(self, store: Store, locks: Locks, keeper: Keeper, *, dim: int, model_version: str) -> None:
        self.store, self.locks, self.keeper = store, locks, keeper
        self.dim, self.model_version = dim, model_version

    def add(self, items: Sequence[tuple[str | None, NewFace]], *, metadata: dict[str, dict[str, Any]] | None = None,
            actor: str | None = None, before: Before | None = None, after: After | None = None) -> list[int]:
        """Add faces (each of an identity, created if new, or of none: a photo's unnamed face) in one transaction,
        all or none; returns their ids in order."""
        items = [(None if key is None else validate_key(key), f) for key, f in items]
        vecs = unit_vectors([f for _, f in items], self.dim) if items else np.zeros((0, self.dim), np.float32)
        with self.locks.writing():
            with self.store.transaction() as c:
                # inside the transaction: another process (a reembed) may have switched the model meanwhile
                if model_changed(self.store, self.model_version, self.dim, c):
                    raise GalleryMismatch("gallery awaits re-embedding with the current model")
                pid = None if before is None else before(c)
                rows = [(key, FaceRow.of(f, v, pid)) for (key, f), v in zip(items, vecs, strict=True)]
                ids, seqs = self.store.add_faces(c, rows, self.model_version, metadata, actor) if rows else ([], [])
                if after is not None:
                    after(c, ids, vecs)
                faces = Placed.of(ids, vecs, named=[k is not None for k, _ in rows], in_photo=pid is not None)
                self.keeper.staged(faces)
            self.keeper.added(faces, seqs)
        return ids

    def name(self, pick: Callable[[Conn], list[int]], identity: str, event: str, actor: str | None,
             **detail: object) -> list[int]:
        """The faces ``pick`` chooses (unnamed photo faces; it raises NotFound) become the identity's (created if
        new) and join the ``people`` space; audited. Returns them."""
        identity = validate_key(identity)
        with self.locks.writing():
            with self.store.transaction() as c:
                ids = pick(c)
                photo_queries.name_faces(c, ids, self.store.ensure_identity(c, identity))
                found, vecs = photo_queries.embeddings(c, ids)
                seqs = self.store.insert_changes(c, [(f, ADD) for f in found])
                self.store.audit(c, event, actor=actor, identity=identity, face_ids=ids, **detail)
                # into ``people`` only: the ``photos`` index holds them already
                faces = Placed.of(found, vecs.reshape(len(found), self.dim), named=True, in_photo=False)
                self.keeper.staged(faces)
            self.keeper.added(faces, seqs)
        return ids

    def delete(self, select: Callable[[Conn], list[int]], event: str, actor: str | None, *,
               finish: Callable[[Conn], None] | None = None, identity: str | None = None, audit_empty: bool = True,
               **detail: object) -> list[int]:
        """Delete the faces ``select`` picks (it raises NotFound), then run ``finish`` (deleting the rows that held
        them), in one write transaction; returns the face ids. When it returns, no file under the gallery's folder
        holds their embeddings or crops (the audit keeps the event, without face data)."""
        with self.locks.mutex:
            with self.locks.rw.write():
                with self.store.transaction() as c:
                    ids = select(c)
                    vectors, seqs = self.store.delete_faces(c, ids, event=event, actor=actor, **detail)
                    if not ids and audit_empty:
                        self.store.audit(c, event, actor=actor, identity=identity, face_ids=[], **detail)
                    if finish is not None:
                        finish(c)
                self.keeper.removed(np.array(ids, dtype=np.int64), seqs)
            self.keeper.erase(np.array(ids, dtype=np.int64), vectors)
            self.store.erase_deleted()
        self.keeper.maybe_rebuild()
        return ids

    def delete_in_batches(self, select: Callable[[Conn, int], list[int]], event: str, actor: str | None, *,
                          finish: Callable[[Conn], None] | None = None, **detail: object) -> list[int]:
        """Delete faces ``DELETE_BATCH`` at a time while ``select(c, limit)`` picks more (it returns [] when none
        are left); the locks are released between batches. ``finish`` runs in the last batch's transaction, after
        every face has gone. Returns every face id deleted; each batch is audited as ``event``."""
        deleted: list[int] = []
        last = False

        def pick(c: Conn) -> list[int]:
            nonlocal last
            batch = select(c, DELETE_BATCH)
            last = len(batch) < DELETE_BATCH
            return batch

        def done(c: Conn) -> None:
            if last and finish is not None:
                finish(c)

        while not last:
            deleted += self.delete(pick, event, actor, finish=done, identity=None, audit_empty=not deleted,
                                   **detail)
        return deleted
