"""Gallery: identities and their faces in a store (the truth: SQLite, or PostgreSQL shared by replicas), searched
through a vector index a keeper derives from it (:mod:`index.keeper`: FAISS here, or Milvus shared by replicas).

Writes commit to the store first, then update the index, under a write lock; searches hold a read lock, so a search
never sees a half-applied write, and every hit is checked against the store. A delete returns when no file under the
gallery's folder holds the face (SQLite ``secure_delete``, the WAL truncated, the snapshot's vector overwritten).
Elsewhere: re-embedding (:mod:`index.reembed`), export and import (:mod:`index.transfer`), photos (:mod:`index.photos`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index import photo_queries, reembed
from index.config import new_keeper, open_store
from index.errors import Conflict, GalleryMismatch, InvalidKey, NotFound
from index.keeper import Keeper, check_model, follow, model_changed
from index.locks import Locks
from index.photos import Photos, join_clusters
from index.ranking import group_hits, nearest_faces
from index.records import (
    AuditEntry,
    FaceRecord,
    IdentityRecord,
    NewFace,
    NewPhoto,
    ReembedReport,
    SearchResult,
    is_int64,
    unit_queries,
    unit_vectors,
    validate_key,
)
from index.store import Conn, FaceRow, Store
from index.vectors import Kind, Vectors


class Gallery:
    """Open (or create) the gallery in ``folder``: the store (``gallery.db``, or PostgreSQL at ``database_url``) and
    the vector index (FAISS, snapshotted in ``index/g<generation>/``, or Milvus at ``vector_url``). ``dim`` and
    ``model_version`` must be the store's, unless ``allow_mismatch`` (then :meth:`reembed` before searching or
    enrolling: until then the index is empty). A thread follows other processes' writes (PostgreSQL, Milvus)."""

    def __init__(self, folder: Path, *, dim: int, model_version: str, kind: Kind = "exact",
                 allow_mismatch: bool = False, database_url: str | None = None, pool_size: int = 8,
                 vector_url: str | None = None, milvus_index: str = "FLAT") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim, self.model_version = dim, model_version
        self.store: Store = open_store(self.folder, database_url, pool_size)
        self.locks = Locks()
        self._closing = threading.Event()
        try:
            check_model(self.store, model_version, dim, allow_mismatch=allow_mismatch, location=self.location)
            self.store.erase_deleted()  # a kill between a delete's commit and its erasure: erase now
            self.keeper: Keeper = new_keeper(self.store, self.locks, self.folder, dim=dim, kind=kind,
                                             model_version=model_version, vector_url=vector_url,
                                             milvus_index=milvus_index)
        except BaseException:
            self.store.close()
            raise
        self.photos = Photos(self)
        self._follower = follow(self.keeper, self.store, self._closing) if self.keeper.follows else None

    @property
    def location(self) -> str:
        """Where the truth lives, for messages (never with a password)."""
        return "in PostgreSQL" if self.store.shared else str(self.folder)

    @property
    def index(self) -> Vectors:
        return self.keeper.index

    @property
    def generation(self) -> int:
        return self.keeper.generation

    @property
    def applied_change(self) -> int:
        """The change log is applied to this process's index up to this sequence number."""
        return self.keeper.applied

    @property
    def needs_reembed(self) -> bool:
        return model_changed(self.store, self.model_version, self.dim)

    def stored_model(self) -> tuple[str | None, int]:
        """(model version, dimension) the stored embeddings were made with."""
        return self.store.get_meta("model_version"), int(self.store.get_meta("dim") or 0)

    def catch_up(self) -> int:  # apply the changes other processes committed; returns how many
        return self.keeper.catch_up()

    def snapshot(self, *, force: bool = False) -> bool:  # persist the index if it changed; prune the change log
        return self.keeper.snapshot(force=force)

    def close(self) -> None:
        self._closing.set()
        if self._follower is not None:
            self._follower.join()
        try:
            self.keeper.close()
        finally:
            self.store.close()

    # --- writes ----------------------------------------------------------------------------------------
    def add_faces(self, identity: str, faces: Sequence[NewFace], *, metadata: dict[str, Any] | None = None
                  ) -> list[int]:
        """Add faces to an identity (created if new), atomically. Returns the new face ids."""
        return self.add_many([(identity, f) for f in faces], metadata={identity: metadata} if metadata else None)

    def add_many(self, items: Sequence[tuple[str | None, NewFace]], *,
                 metadata: dict[str, dict[str, Any]] | None = None, actor: str | None = None,
                 photo: NewPhoto | None = None, cluster_within: float | None = None) -> list[int]:
        """Add faces of one or more identities in one transaction (all or none). Returns face ids in order.

        ``photo``: the faces are that photo's (stored with it; Conflict if its key exists); a face with identity
        None is nobody's yet and, with ``cluster_within`` (a distance), joins the cluster of its nearest unnamed
        face that close, else starts its own."""
        if photo is None and any(key is None for key, _ in items):
            raise InvalidKey("identity must not be blank")
        items = [(None if key is None else validate_key(key), f) for key, f in items]
        vecs = unit_vectors([f for _, f in items], self.dim) if items else np.zeros((0, self.dim), np.float32)
        with self.locks.writing():
            with self.store.transaction() as c:
                # inside the transaction: another process (a reembed) may have switched the model meanwhile
                if model_changed(self.store, self.model_version, self.dim, c):
                    raise GalleryMismatch("gallery awaits re-embedding with the current model")
                pid = None if photo is None else photo_queries.insert_photo(self.store, c, photo)
                if photo is not None and pid is None:
                    raise Conflict(f"photo {photo.key!r} already exists")
                rows = [(key, FaceRow.of(f, v, pid)) for (key, f), v in zip(items, vecs, strict=True)]
                ids, seqs = self.store.add_faces(c, rows, self.model_version, metadata, actor) if rows else ([], [])
                if photo is not None:
                    self.store.audit(c, "index_photo", actor=actor, face_ids=ids, photo=photo.key)
                    if cluster_within is not None:
                        unnamed = [n for n, (k, _) in enumerate(rows) if k is None]
                        join_clusters(c, self.index, [ids[n] for n in unnamed], vecs[unnamed], cluster_within)
                self.keeper.staged(np.array(ids, dtype=np.int64), vecs)
            self.keeper.added(np.array(ids, dtype=np.int64), vecs, seqs)
        return ids

    def delete_where(self, select: Callable[[Conn], list[int]], event: str, actor: str | None, *,
                     finish: Callable[[Conn], None] | None = None, identity: str | None = None,
                     **detail: object) -> list[int]:
        """Delete the faces ``select`` picks (it raises NotFound), then run ``finish`` (deleting the rows that
        held them), in one write transaction; returns the face ids. When it returns, no file under the gallery's
        folder holds their embeddings or crops (the audit keeps the event, without face data)."""
        with self.locks.mutex:
            with self.locks.rw.write():
                with self.store.transaction() as c:
                    ids = select(c)
                    vectors, seqs = self.store.delete_faces(c, ids, event=event, actor=actor, **detail)
                    if not ids:
                        self.store.audit(c, event, actor=actor, identity=identity, face_ids=[], **detail)
                    if finish is not None:
                        finish(c)
                self.keeper.removed(np.array(ids, dtype=np.int64), seqs)
            self.keeper.erase(vectors)
            self.store.erase_deleted()
        self.keeper.maybe_rebuild()
        return ids

    def delete_face(self, face_id: int, *, actor: str | None = None) -> str | None:
        """Delete one face; returns its identity (None: a photo's unnamed face). An identity left without faces
        is kept. When it returns, no file under the gallery's folder holds the face's embedding or crops."""
        owner = []

        def select(c: Conn) -> list[int]:
            found = self.store.face_owner(c, int(face_id)) if is_int64(face_id) else None
            if found is None:
                raise NotFound(f"face {face_id} not found")
            owner.append(found.identity)
            return [found.face_id]

        self.delete_where(select, "delete_face", actor)
        return owner[0]

    def delete_identity(self, identity: str, *, actor: str | None = None) -> int:
        """Delete an identity with all its faces (those found in photos too); returns how many faces went. When it
        returns, no file under the gallery's folder holds their embeddings or crops (the audit keeps the event)."""
        ident: list[int] = []

        def select(c: Conn) -> list[int]:
            i = self.store.identity_id(c, identity)
            if i is None:
                raise NotFound(f"identity {identity!r} not found")
            ident.append(i)
            return self.store.identity_face_ids(c, i)

        return len(self.delete_where(select, "delete_identity", actor, identity=identity,
                                     finish=lambda c: self.store.delete_identity_row(c, ident[0])))

    def update_identity(self, identity: str, *, new_key: str | None = None,
                        metadata: dict[str, Any] | None = None, actor: str | None = None) -> IdentityRecord:
        """Rename and/or replace the metadata of an identity."""
        if new_key is not None:
            new_key = validate_key(new_key)
        with self.locks.writing(), self.store.transaction() as c:
            ident = self.store.identity_id(c, identity)
            if ident is None:
                raise NotFound(f"identity {identity!r} not found")
            if new_key is not None and new_key != identity:
                if self.store.identity_id(c, new_key) is not None:
                    raise Conflict(f"identity {new_key!r} already exists")
                self.store.rename_identity(c, ident, new_key)
                self.store.audit(c, "rename", actor=actor, identity=new_key, previous=identity)
            if metadata is not None:
                self.store.set_identity_metadata(c, ident, metadata)
                self.store.audit(c, "update_metadata", actor=actor, identity=new_key or identity)
        return self.get_identity(new_key if new_key is not None else identity)

    def merge_identities(self, into: str, other: str, *, actor: str | None = None) -> IdentityRecord:
        """Every face of ``other`` becomes ``into``'s and ``other`` is deleted (its metadata with it); audited."""
        with self.locks.writing(), self.store.transaction() as c:
            a, b = self.store.identity_id(c, into), self.store.identity_id(c, other)
            if a is None or b is None:
                raise NotFound(f"identity {into if a is None else other!r} not found")
            if a == b:
                raise Conflict("an identity cannot be merged into itself")
            moved = self.store.identity_face_ids(c, b)
            photo_queries.name_faces(c, moved, a)
            self.store.delete_identity_row(c, b)
            self.store.audit(c, "merge_identities", actor=actor, identity=into, face_ids=moved, merged=other)
        return self.get_identity(into)

    def record_audit(self, event: str, *, actor: str | None = None, identity: str | None = None,
                     face_ids: list[int] | None = None, **detail: object) -> None:
        """An audit line for an event that writes nothing else (an export)."""
        with self.locks.mutex, self.store.transaction() as c:
            self.store.audit(c, event, actor=actor, identity=identity, face_ids=face_ids, **detail)

    # --- reads -----------------------------------------------------------------------------------------
    def count(self) -> tuple[int, int]:  # (identities, faces)
        return self.store.count()

    def get_identity(self, identity: str) -> IdentityRecord:
        return _found(self.store.get_identity(identity), f"identity {identity!r} not found")

    def list_identities(self, *, limit: int = 50, offset: int = 0, prefix: str = ""
                        ) -> tuple[list[IdentityRecord], int]:
        """Identities ordered by key, optionally those starting with ``prefix``; returns (page, total)."""
        return self.store.list_identities(limit, offset, prefix)

    def list_faces(self, identity: str, *, limit: int = 100, offset: int = 0) -> tuple[list[FaceRecord], int]:
        return _found(self.store.list_faces(identity, limit, offset), f"identity {identity!r} not found")

    def get_face(self, face_id: int) -> FaceRecord:
        return _found(self.store.get_face(int(face_id)) if is_int64(face_id) else None, f"face {face_id} not found")

    def thumbnail(self, face_id: int) -> bytes:
        exists, data = self.store.face_column(int(face_id), "thumbnail") if is_int64(face_id) else (False, None)
        return _found(data, f"face {face_id} has no thumbnail" if exists else f"face {face_id} not found")

    def faces_with_sha256(self, sha256: str) -> list[FaceRecord]:
        return self.store.faces_with_sha256(sha256)

    def embeddings(self, identity: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids int64 (n,), embeddings float32 (n, D)) of one identity."""
        ids, blob = _found(self.store.identity_embeddings(identity), f"identity {identity!r} not found")
        return np.array(ids, dtype=np.int64), np.frombuffer(blob, dtype=np.float32).reshape(len(ids), self.dim)

    def audit_log(self, *, since: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Audit lines with seq > ``since``, oldest first."""
        return self.store.audit_log(int(since), int(limit))

    def ping(self) -> None:  # raises StoreUnavailable when the store does not answer
        self.store.ping()

    # --- search ----------------------------------------------------------------------------------------
    @property
    def searchable_faces(self) -> int:
        """How many identities' faces a search compares against (what the search threshold is calibrated for);
        photos' unnamed faces are not searched for identities."""
        with self.store.read() as c:
            return max(0, self.index.live - photo_queries.count_unnamed(c))

    def search(self, queries: np.ndarray, *, k: int = 5, k_faces: int | None = None,
               threshold: float | None = None) -> list[SearchResult]:
        """For each query (float32 (n, D)): the top faces and the top-k identities, scored by their best face.

        ``threshold`` (a distance) marks each identity hit as a match or not. An empty gallery gives empty results.
        Hits are checked against the store: a face deleted by another replica a moment ago is never returned.
        """
        k = max(1, int(k))
        k_faces = max(1, int(k_faces or k))
        with self.locks.rw.read():
            sims, ids, owner = nearest_faces(self.index, self.store, unit_queries(queries, self.dim), k, k_faces)
        return group_hits(sims, ids, owner, k=k, k_faces=k_faces, threshold=threshold)

    # --- maintenance -----------------------------------------------------------------------------------
    def verify(self) -> dict[str, Any]:
        """Compare the index with the store: ids on both sides."""
        with self.locks.rw.read():
            index_ids = self.index.ids()
            store_ids = np.array(self.store.face_ids(), dtype=np.int64)
            missing = np.setdiff1d(store_ids, index_ids)
            extra = np.setdiff1d(index_ids, store_ids)
        return {"faces_in_store": int(len(store_ids)), "faces_in_index": int(len(index_ids)),
                "missing_from_index": missing[:20].tolist(), "extra_in_index": extra[:20].tolist(),
                "ok": not len(missing) and not len(extra)}

    def rebuild_index(self) -> None:
        """Rebuild the index from the store now (blocking writes meanwhile) and persist it."""
        self.keeper.rebuild()

    def compact(self) -> dict[str, Any]:
        """Rewrite everything that keeps deleted faces' bytes in free space: the store's tables and log
        (:meth:`Store.compact`) and, where the keeper needs it, the index (:meth:`index.keeper.Keeper.compact`)."""
        with self.locks.writing():
            store = self.store.compact()
        rebuilt = self.keeper.compact()
        return {"store": store, "index": {"kind": self.index.kind, "rebuilt": rebuilt, "faces": self.index.live}}

    def reembed(self, embed: reembed.Embed, **options: Any) -> ReembedReport:
        """Embed every face again with this gallery's model into a new generation (:func:`index.reembed.reembed`)."""
        return reembed.reembed(self, embed, **options)

    def reembed_status(self) -> dict[str, Any] | None:
        return reembed.status(self.store)

    def generations(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(g) for g in self.store.generations()]

    def stats(self) -> dict[str, Any]:
        identities, faces = self.count()
        with self.store.read() as c:
            photos, unnamed = photo_queries.count_photos(c), photo_queries.count_unnamed(c)
        return {"identities": identities, "faces": faces, "photos": photos, "unnamed_faces": unnamed,
                "index_kind": self.index.kind, "indexed": self.index.live, "dim": self.dim,
                "model_version": self.model_version, "stored_model_version": self.stored_model()[0],
                "generation": self.generation, "reembed": self.reembed_status(),
                "store": "postgresql" if self.store.shared else "sqlite", "db_bytes": self.store.size_bytes(),
                "change_counter": self.store.seq(), "applied_change": self.applied_change}


T = TypeVar("T")


def _found(value: T | None, missing: str) -> T:
    if value is None:
        raise NotFound(missing)
    return value
