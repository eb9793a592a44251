"""Photos in a gallery: every face of a photo indexed (named or not), the photos a person appears in, and the
clusters that group unnamed faces into people until someone names them.

:class:`Photos` is the gallery's photo aggregate (``Gallery.photos``): its faces are written through the gallery's
one write path (:class:`index.writes.Writes`: the store first, then the indexes; erasure as for any face), searched in
the ``photos`` space (:mod:`index.spaces`), and its SQL is :mod:`index.photo_queries`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from index import clusters, photo_queries
from index.errors import Conflict, NotFound
from index.keeper import Keeper
from index.locks import Locks
from index.records import (
    ClusterRecord,
    FaceRecord,
    NewFace,
    NewPhoto,
    PhotoHit,
    PhotoRecord,
    face_record,
    photo_record,
    similarity_to_distance,
    unit_vectors,
    validate_key,
)
from index.store import Conn, Store
from index.vectors import Vectors
from index.writes import Writes

EXPAND_SEEDS = 64  # the closest faces found that widen a photo search
JOIN_K = 8  # an unnamed face's nearest faces that may give it their cluster
RECENT = 1024  # photos added lately whose faces a cluster join compares with itself (see Photos.add)


class Photos:
    def __init__(self, store: Store, locks: Locks, keeper: Keeper, writes: Writes, *, dim: int) -> None:
        self.store, self.locks, self.keeper, self.writes, self.dim = store, locks, keeper, writes, dim
        # the unnamed faces of the photos this process added lately: (number of the add, ids, vectors); changed
        # under the write lock only, as the index is
        self._recent: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=RECENT)
        self._adds = 0
        self._recent_lock = threading.Lock()

    @property
    def index(self) -> Vectors:
        """The ``photos`` space (the keeper swaps its indexes on a rebuild: looked up each time)."""
        return self.keeper.indexes["photos"]

    # --- writes --------------------------------------------------------------------------------------
    def add(self, photo: NewPhoto, faces: Sequence[tuple[str | None, NewFace]], *, cluster_within: float | None,
            actor: str | None = None) -> list[int]:
        """Store the photo and its faces (each with the identity it is, or None) in one transaction; an unnamed face
        joins the cluster of its nearest unnamed face within ``cluster_within`` (a distance), else starts its own
        (faces of one photo never share one). Conflict when the key exists. Returns face ids."""
        photo = NewPhoto(validate_key(photo.key, "photo_id"), photo.album, photo.metadata, photo.width,
                         photo.height)

        def insert_photo(c: Conn) -> int:
            pid = photo_queries.insert_photo(self.store, c, photo)
            if pid is None:
                raise Conflict(f"photo {photo.key!r} already exists")
            return pid

        unnamed = [n for n, (key, _) in enumerate(faces) if key is None]
        # the join's search of the whole space runs before the write lock, beside other requests' (under the read
        # lock); under the write lock the faces are compared only with those added since (``_recent``)
        near = self._nearest(unit_vectors([faces[n][1] for n in unnamed], self.dim)) \
            if cluster_within is not None and unnamed else None

        def cluster(c: Conn, ids: list[int], vecs: np.ndarray) -> None:
            self.store.audit(c, "index_photo", actor=actor, face_ids=ids, photo=photo.key)
            if near is not None and cluster_within is not None:
                new_ids, new_vecs = [ids[n] for n in unnamed], vecs[unnamed]
                sims, nbrs = self._with_recent(new_vecs, *near)
                join_clusters(c, new_ids, sims, nbrs, cluster_within)
                self._remember(np.asarray(new_ids, np.int64), new_vecs)

        return self.writes.add(faces, actor=actor, before=insert_photo, after=cluster)

    def _nearest(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(similarities, ids) of the JOIN_K nearest faces of the ``photos`` space, and the number of the last add
        they reflect."""
        with self.locks.rw.read():
            seen = self._adds
            index = self.index
            if not index.live:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), seen
            sims, ids = index.search(q, JOIN_K)
        return sims, ids, seen

    def _with_recent(self, q: np.ndarray, sims: np.ndarray, ids: np.ndarray, seen: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The nearest faces found before the write lock, merged with those among the faces added since (the
        caller holds the write lock). When more were added since than are remembered, the space is searched again."""
        with self._recent_lock:
            since = [(i, v) for n, i, v in self._recent if n > seen]
            complete = not self._recent or self._recent[0][0] <= seen + 1
        if not complete:
            index = self.index
            return index.search(q, JOIN_K) if index.live else (sims, ids)
        if not since:
            return sims, ids
        cand_ids = np.concatenate([ids, np.broadcast_to(np.concatenate([i for i, _ in since]),
                                                        (len(q), sum(len(i) for i, _ in since)))], axis=1)
        cand_sims = np.concatenate([sims, q @ np.concatenate([v for _, v in since]).T], axis=1)
        order = np.argsort(-cand_sims, axis=1, kind="stable")[:, :JOIN_K]
        return np.take_along_axis(cand_sims, order, 1), np.take_along_axis(cand_ids, order, 1)

    def _remember(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """A photo's unnamed faces are in (the caller holds the write lock)."""
        with self._recent_lock:
            self._adds += 1
            self._recent.append((self._adds, ids, vecs))

    def delete(self, key: str, *, actor: str | None = None) -> int:
        """Delete a photo and its faces, named or not; returns how many faces went. Erasure as for faces."""
        pid: list[int] = []

        def select(c: Conn) -> list[int]:
            i = photo_queries.photo_id(c, key)
            if i is None:
                raise NotFound(f"photo {key!r} not found")
            pid.append(i)
            return photo_queries.photo_face_ids(c, i)

        return len(self.writes.delete(select, "delete_photo", actor, photo=key,
                                      finish=lambda c: photo_queries.delete_photo_rows(c, pid)))

    def delete_album(self, album: str, *, actor: str | None = None) -> tuple[int, int]:
        """Delete every photo of an album with their faces, in batches (searches answer meanwhile); returns
        (photos, faces)."""
        pids: list[int] = []  # the album's photos as the last batch saw them: that batch deletes their rows
        first = [True]

        def select(c: Conn, limit: int) -> list[int]:
            pids[:] = photo_queries.album_photo_ids(c, album)
            if not pids and first[0]:
                raise NotFound(f"album {album!r} has no photos")
            first[0] = False
            return photo_queries.faces_of_photos(c, pids, limit)

        faces = self.writes.delete_in_batches(select, "delete_album", actor, album=album,
                                              finish=lambda c: photo_queries.delete_photo_rows(c, pids))
        return len(pids), len(faces)

    def delete_cluster(self, cluster: int, *, actor: str | None = None) -> int:
        """Erase a cluster's faces, in batches (the photos stay, without them); returns how many went."""
        first = [True]

        def select(c: Conn, limit: int) -> list[int]:
            ids = photo_queries.cluster_face_ids(c, cluster, limit)
            if not ids and first[0]:
                raise NotFound(f"cluster {cluster} not found")
            first[0] = False
            return ids

        return len(self.writes.delete_in_batches(select, "delete_cluster", actor, cluster=cluster))

    def expire_unnamed(self, before: float, *, actor: str | None = "retention") -> int:
        """Erase the unnamed faces indexed before ``before`` (a Unix time), in batches; returns how many went."""
        with self.store.read() as c:
            if not photo_queries.unnamed_before(c, before, 1):
                return 0
        return len(self.writes.delete_in_batches(lambda c, limit: photo_queries.unnamed_before(c, before, limit),
                                                 "retention", actor, indexed_before=before))

    # --- reads ---------------------------------------------------------------------------------------
    def get(self, key: str) -> tuple[PhotoRecord, list[FaceRecord]]:
        with self.store.read(consistent=True) as c:
            row = photo_queries.get_photo(c, key)
            if row is None:
                raise NotFound(f"photo {key!r} not found")
            faces = photo_queries.photo_face_rows(c, key)
        return photo_record(row), [face_record(r) for r in faces]

    def list_photos(self, *, album: str | None = None, limit: int = 50, offset: int = 0
                    ) -> tuple[list[PhotoRecord], int]:
        with self.store.read(consistent=True) as c:
            rows, total = photo_queries.list_photos(c, album, limit, offset)
        return [photo_record(r) for r in rows], total

    @property
    def searchable_faces(self) -> int:
        """How many photos' faces a photo search compares against (what its threshold is calibrated for): the
        ``photos`` space's size, kept by its index (no query)."""
        return self.index.live

    def search(self, queries: np.ndarray, threshold: float, *, album: str | None = None, limit: int = 100,
               expand: bool = False) -> list[PhotoHit]:
        """The photos holding a face within ``threshold`` of any query (float32 (n, D): one selfie's face, or an
        identity's faces), best first, each with its closest face. ``expand``: also the photos holding a face
        within ``threshold`` of at least two of the faces found so (other photos of the person, in other light and
        pose), listed after them with ``expanded``."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        cap = max(256, 4 * limit)
        with self.locks.rw.read():
            close = self._within(q, threshold, cap)[0]
            more: dict[int, float] = {}
            if expand and len(close) >= 2:
                seeds = sorted(close, key=lambda f: close[f])[:EXPAND_SEEDS]
                with self.store.read() as c:
                    _, vecs = photo_queries.embeddings(c, seeds)
                _, votes = self._within(vecs, threshold, cap)
                found = [f for f, n in votes.items() if n >= 2 and f not in close]
                if found:
                    with self.store.read() as c:
                        found, cand = photo_queries.embeddings(c, found)
                    d = np.sqrt(np.clip(2.0 - 2.0 * cand @ q.T, 0.0, 4.0)).min(axis=1)
                    more = {f: float(x) for f, x in zip(found, d.tolist(), strict=True)}
            with self.store.read() as c:
                where = photo_queries.photo_faces(c, sorted(close | more.keys()), album)
        best: dict[str, PhotoHit] = {}
        for faces, expanded in ((close, False), (more, True)):
            for face_id, d in faces.items():
                if face_id not in where:
                    continue
                at = where[face_id]
                hit = best.get(at.photo)  # a photo found directly keeps its direct hit
                if hit is None or (hit.expanded == expanded and d < hit.distance):
                    best[at.photo] = PhotoHit(at.photo, at.album, face_id, at.box, 1.0 - d * d / 2.0, d, expanded)
        return sorted(best.values(), key=lambda h: (h.expanded, h.distance, h.photo))[:limit]

    def _within(self, q: np.ndarray, threshold: float, cap: int) -> tuple[dict[int, float], dict[int, int]]:
        """Faces within ``threshold`` of any of the queries, at most the ``cap`` nearest per query (enough for a
        search's ``limit`` photos): (face id -> its smallest distance, face id -> how many queries it is within
        ``threshold`` of). Caller holds the gallery's read lock."""
        index = self.index
        live = index.live
        if not live:  # no photo face at all (the index answers no columns)
            return {}, {}
        fetch = min(64, cap, live)
        while True:
            sims, ids = index.search(q, fetch)
            # everything fetched is within the threshold: there may be more beyond
            full = (ids >= 0).all() and float(similarity_to_distance(sims[:, -1].max())) <= threshold
            if not full or fetch >= min(live, cap):
                break
            fetch = min(4 * fetch, live, cap)
        close: dict[int, float] = {}
        votes: dict[int, int] = {}
        for row_s, row_i in zip(sims, ids, strict=True):
            for s, i in zip(row_s, row_i, strict=True):
                d = float(similarity_to_distance(min(1.0, float(s))))
                if i >= 0 and d <= threshold:
                    close[int(i)] = min(d, close.get(int(i), 9.0))
                    votes[int(i)] = votes.get(int(i), 0) + 1
        return close, votes

    # --- clusters ------------------------------------------------------------------------------------
    def list_clusters(self, *, limit: int = 50, offset: int = 0, min_faces: int = 1, sample: int = 8
                 ) -> tuple[list[ClusterRecord], int]:
        """Clusters of unnamed faces, largest first: their first faces and photos."""
        with self.store.read(consistent=True) as c:
            rows, total = photo_queries.list_clusters(c, limit, offset, min_faces)
            out = [ClusterRecord(k, n, photo_queries.cluster_face_ids(c, k, sample),
                                 photo_queries.cluster_photos(c, k, sample)) for k, n in rows]
        return out, total

    def cluster(self, cluster: int, *, limit: int | None = None, offset: int = 0) -> ClusterRecord:
        """A cluster: its size, a page of its faces (``limit`` from ``offset``; every face when None) and the photos
        holding them (the first 1,000)."""
        with self.store.read(consistent=True) as c:
            size = photo_queries.cluster_size(c, cluster)
            if not size:
                raise NotFound(f"cluster {cluster} not found")
            return ClusterRecord(cluster, size, photo_queries.cluster_face_ids(c, cluster, limit, offset),
                                 photo_queries.cluster_photos(c, cluster, 1000))

    def recluster(self, threshold: float, *, album: str | None = None, method: clusters.Method = "whispers",
                  actor: str | None = None, progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
        """Group the unnamed faces (of ``album``'s photos) again from scratch; returns counts. Merges and moves made
        by hand are regrouped too. ``progress(stage, faces)``: reading, grouping, writing."""
        report = progress or (lambda stage, faces: None)
        report("reading", 0)
        with self.store.read(consistent=True) as c:
            ids, vecs = photo_queries.unnamed_embeddings(c, album)
        if not len(ids):
            return {"faces": 0, "clusters": 0}
        report("grouping", len(ids))
        labels = clusters.cluster(vecs, threshold, method=method)
        report("writing", len(ids))
        first: dict[int, int] = {}
        for face_id, label in zip(ids.tolist(), labels.tolist(), strict=True):
            first.setdefault(label, face_id)  # a cluster's id: its first face's
        with self.locks.mutex, self.store.transaction() as c:  # faces named meanwhile are left alone
            photo_queries.set_clusters(c, [(f, first[lab]) for f, lab in zip(ids.tolist(), labels.tolist(),
                                                                               strict=True)])
            self.store.audit(c, "recluster", actor=actor, album=album, faces=len(ids), clusters=len(first))
        return {"faces": len(ids), "clusters": len(first)}

    def name_cluster(self, cluster: int, identity: str, *, actor: str | None = None) -> list[int]:
        """The cluster's faces become the identity's (created if new); returns them."""
        return self._name(lambda c: photo_queries.cluster_face_ids(c, cluster), identity, actor,
                          f"cluster {cluster} not found", cluster=cluster)

    def name_face(self, face_id: int, identity: str, *, actor: str | None = None) -> None:
        """One unnamed face becomes the identity's."""

        def pick(c: Conn) -> list[int]:
            unnamed = photo_queries.unnamed_face(c, face_id)
            if unnamed is False:
                raise Conflict(f"face {face_id} already belongs to an identity")
            return [] if unnamed is None else [face_id]

        self._name(pick, identity, actor, f"face {face_id} not found")

    def _name(self, pick: Callable[[Conn], list[int]], identity: str, actor: str | None, missing: str,
              **detail: object) -> list[int]:
        """The faces ``pick`` chooses become the identity's and join the ``people`` space (identity search)."""

        def picked(c: Conn) -> list[int]:
            ids = pick(c)
            if not ids:
                raise NotFound(missing)
            return ids

        return self.writes.name(picked, identity, "name_faces", actor, **detail)

    def move_face(self, face_id: int, cluster: int, *, actor: str | None = None) -> None:
        """Move an unnamed face into another cluster."""
        with self.locks.mutex, self.store.transaction() as c:
            if not photo_queries.unnamed_face(c, face_id):
                raise NotFound(f"unnamed face {face_id} not found")
            if not photo_queries.cluster_face_ids(c, cluster):
                raise NotFound(f"cluster {cluster} not found")
            photo_queries.set_clusters(c, [(face_id, cluster)])
            self.store.audit(c, "move_face", actor=actor, face_ids=[face_id], cluster=cluster)

    def merge_clusters(self, into: int, other: int, *, actor: str | None = None) -> int:
        """Every face of ``other`` joins ``into``; returns the merged cluster's size."""
        with self.locks.mutex, self.store.transaction() as c:
            a, b = photo_queries.cluster_face_ids(c, into), photo_queries.cluster_face_ids(c, other)
            if not a or not b:
                raise NotFound(f"cluster {into if not a else other} not found")
            photo_queries.set_clusters(c, [(f, into) for f in b])
            self.store.audit(c, "merge_clusters", actor=actor, cluster=into, merged=other)
        return len(a) + len(b)


def join_clusters(c: Conn, ids: list[int], sims: np.ndarray, nbrs: np.ndarray, within: float) -> None:
    """New unnamed faces (not yet in the index) join their nearest unnamed neighbour's cluster when it is
    ``within`` that distance, else start their own; faces of the same photo never share one. ``sims``, ``nbrs``:
    each face's nearest faces (a neighbour deleted or named since is passed over)."""
    if not ids:
        return
    near = photo_queries.unnamed_clusters(c, sorted({int(i) for i in nbrs.ravel() if i >= 0}))
    taken: set[int] = set()
    assignment = []
    for n, face_id in enumerate(ids):
        cluster = face_id
        for s, i in zip(sims[n], nbrs[n], strict=True):
            k = near.get(int(i))
            if k is not None and k not in taken and float(similarity_to_distance(s)) <= within:
                cluster = k
                break
        taken.add(cluster)
        assignment.append((face_id, cluster))
    photo_queries.set_clusters(c, assignment)
