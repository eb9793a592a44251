"""Gallery: identities and their faces in a store (the truth: SQLite, or PostgreSQL shared by replicas), searched
through a vector index a keeper derives from it (:mod:`index.keeper`: FAISS here, or Milvus shared by replicas).

Writes commit to the store first, then update the index, under a write lock; searches hold a read lock, so a search
never sees a half-applied write, and every hit is checked against the store. A delete returns when no file under the
gallery's folder holds the face (SQLite ``secure_delete``, the WAL truncated, the snapshot's vector overwritten).
Faces are searched in two spaces (:mod:`index.spaces`): identity search in ``people``, photo search in ``photos``.
Elsewhere: the write path (:mod:`index.writes`), re-embedding (:mod:`index.reembed`), export and import
(:mod:`index.transfer`), photos (:mod:`index.photos`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index import photo_queries, reembed
from index.config import new_keeper, open_store
from index.errors import Conflict, InvalidKey, NotFound
from index.keeper import Keeper, check_model, follow, model_changed
from index.locks import Locks
from index.photos import Photos
from index.ranking import group_hits, nearest_faces
from index.records import (
    AuditEntry,
    FaceRecord,
    IdentityRecord,
    NewFace,
    ReembedReport,
    SearchResult,
    is_int64,
    unit_queries,
    validate_key,
)
from index.spaces import SPACES
from index.store import Conn, Store
from index.vectors import Kind, Vectors
from index.writes import Writes


class Gallery:
    """Open (or create) the gallery in ``folder``: the store (``gallery.db``, or PostgreSQL at ``database_url``) and
    the vector index (FAISS, snapshotted in ``index/g<generation>/``, or Milvus at ``vector_url``). ``dim`` and
    ``model_version`` must be the store's, unless ``allow_mismatch`` (then :meth:`reembed` before searching or
    enrolling: until then the index is empty). A thread follows other processes' writes (PostgreSQL, Milvus)."""

    def __init__(self, folder: Path, *, dim: int, model_version: str, kind: Kind = "exact",
                 allow_mismatch: bool = False, database_url: str | None = None, pool_size: int = 8,
                 vector_url: str | None = None, milvus_index: str = "FLAT", collection: str | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim, self.model_version = dim, model_version
        self.store: Store = open_store(self.folder, database_url, pool_size, collection)
        self.locks = Locks()
        self._closing = threading.Event()
        try:
            check_model(self.store, model_version, dim, allow_mismatch=allow_mismatch, location=self.location)
            self.store.erase_deleted()  # a kill between a delete's commit and its erasure: erase now
            self.keeper: Keeper = new_keeper(self.store, self.locks, self.folder, dim=dim, kind=kind,
                                             model_version=model_version, vector_url=vector_url,
                                             milvus_index=milvus_index, collection=collection)
        except BaseException:
            self.store.close()
            raise
        self.writes = Writes(self.store, self.locks, self.keeper, dim=dim, model_version=model_version)
        self.photos = Photos(self.store, self.locks, self.keeper, self.writes, dim=dim)
        self._follower = follow(self.keeper, self.store, self._closing) if self.keeper.follows else None

    @property
    def location(self) -> str:
        """Where the truth lives, for messages (never with a password)."""
        return "in PostgreSQL" if self.store.shared else str(self.folder)

    @property
    def index(self) -> Vectors:
        """The ``people`` space: what identity search compares with (:mod:`index.spaces`)."""
        return self.keeper.indexes["people"]

    @property
    def photo_index(self) -> Vectors:
        """The ``photos`` space: what photo search and clustering compare with."""
        return self.keeper.indexes["photos"]

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

    def destroy(self) -> None:
        """A deleted collection: close, once the searches and writes under way are done, and drop everything kept
        outside the folder (PostgreSQL schema, Milvus collections). The caller then wipes the folder
        (:func:`index.collections.wipe`)."""
        self._closing.set()
        if self._follower is not None:
            self._follower.join()
        with self.locks.writing():
            try:
                self.keeper.destroy()
            finally:
                self.store.destroy()

    # --- writes ----------------------------------------------------------------------------------------
    def add_faces(self, identity: str, faces: Sequence[NewFace], *, metadata: dict[str, Any] | None = None
                  ) -> list[int]:
        """Add faces to an identity (created if new), atomically. Returns the new face ids."""
        return self.add_many([(identity, f) for f in faces], metadata={identity: metadata} if metadata else None)

    def add_many(self, items: Sequence[tuple[str, NewFace]], *, metadata: dict[str, dict[str, Any]] | None = None,
                 actor: str | None = None) -> list[int]:
        """Add faces of one or more identities in one transaction (all or none). Returns face ids in order."""
        if any(key is None for key, _ in items):
            raise InvalidKey("identity must not be blank")
        return self.writes.add(items, metadata=metadata, actor=actor)

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

        self.writes.delete(select, "delete_face", actor)
        return owner[0]

    def delete_identity(self, identity: str, *, actor: str | None = None) -> int:
        """Delete an identity with all its faces (those found in photos too); returns how many faces went. When it
        returns, no file under the gallery's folder holds their embeddings or crops, and the audit keeps the events
        with a keyed hash in place of its names (:meth:`Store.forget_in_audit`)."""
        ident: list[int] = []

        def select(c: Conn) -> list[int]:
            i = self.store.identity_id(c, identity)
            if i is None:
                raise NotFound(f"identity {identity!r} not found")
            ident.append(i)
            return self.store.identity_face_ids(c, i)

        def finish(c: Conn) -> None:
            self.store.delete_identity_row(c, ident[0])
            self.store.forget_in_audit(c, identity)  # the deletion's own line included

        return len(self.writes.delete(select, "delete_identity", actor, identity=identity, finish=finish))

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
        """How many identities' faces a search compares against (what the search threshold is calibrated for): the
        ``people`` space's size, kept by its index (no query)."""
        return self.index.live

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
        """Compare each space's index with the store: ids on both sides, and none held twice."""
        report: dict[str, Any] = {"ok": True}
        with self.locks.rw.read():
            for space in SPACES:
                index_ids = self.keeper.indexes[space].ids()
                store_ids = np.array(self.store.face_ids(space), dtype=np.int64)
                missing = np.setdiff1d(store_ids, index_ids)
                extra = np.setdiff1d(index_ids, store_ids)
                unique, counts = np.unique(index_ids, return_counts=True)
                twice = unique[counts > 1]
                report[space] = {"faces_in_store": int(len(store_ids)), "faces_in_index": int(len(index_ids)),
                                 "missing_from_index": missing[:20].tolist(), "extra_in_index": extra[:20].tolist(),
                                 "twice_in_index": twice[:20].tolist()}
                report["ok"] = report["ok"] and not len(missing) and not len(extra) and not len(twice)
        return report

    def rebuild_index(self) -> None:
        """Rebuild the index from the store now (blocking writes meanwhile) and persist it."""
        self.keeper.rebuild()

    def compact(self) -> dict[str, Any]:
        """Rewrite everything that keeps deleted faces' bytes in free space: the store's tables and log
        (:meth:`Store.compact`) and, where the keeper needs it, the index (:meth:`index.keeper.Keeper.compact`)."""
        with self.locks.writing():
            store = self.store.compact()
        rebuilt = self.keeper.compact()
        return {"store": store, "index": {"kind": self.index.kind, "rebuilt": rebuilt,
                                          "faces": {s: i.live for s, i in self.keeper.indexes.items()}}}

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
            named_in_photos = photo_queries.count_photo_faces(c) - unnamed
        spaces = {s: i.live for s, i in self.keeper.indexes.items()}
        return {"identities": identities, "faces": faces, "photos": photos, "unnamed_faces": unnamed,
                "index_kind": self.index.kind, "spaces": spaces,
                # every face once (a named photo face is in both spaces): equals ``faces`` when the indexes are current
                "indexed": spaces["people"] + spaces["photos"] - named_in_photos, "dim": self.dim,
                "model_version": self.model_version, "stored_model_version": self.stored_model()[0],
                "generation": self.generation, "reembed": self.reembed_status(),
                "store": "postgresql" if self.store.shared else "sqlite", "db_bytes": self.store.size_bytes(),
                "change_counter": self.store.seq(), "applied_change": self.applied_change}


T = TypeVar("T")


def _found(value: T | None, missing: str) -> T:
    if value is None:
        raise NotFound(missing)
    return value
