"""The keeper of a gallery's vector indexes, one per search space (:mod:`index.spaces`): it loads them, applies the
change log (replayed at open, other replicas' writes while serving), rebuilds them, erases deleted faces' vectors and
switches to a re-embedded generation.

Two keepers: :class:`index.local_keeper.LocalKeeper` (FAISS in this process, snapshotted under the data folder) and
:class:`index.shared_keeper.SharedKeeper` (Milvus collections every replica shares). The gallery talks to
:class:`Keeper` only; :func:`index.config.new_keeper` is where one is picked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from index.errors import GalleryMismatch, StoreUnavailable
from index.spaces import Placed, Space
from index.store import Conn, Store
from index.vectors import Vectors

log = logging.getLogger(__name__)
FOLLOW_POLL_S = 1.0  # a replica reads the change log at least this often (NOTIFY wakes it sooner)


class Keeper(Protocol):
    @property
    def indexes(self) -> Mapping[Space, Vectors]: ...  # what searches read (under the gallery's read lock)
    @property
    def generation(self) -> int: ...  # the embeddings' generation it serves (one per re-embedding)
    @property
    def applied(self) -> int: ...  # the change log is applied to the index up to this sequence number
    @property
    def follows(self) -> bool: ...  # other processes write what it must apply: a thread calls catch_up

    def catch_up(self) -> int:
        """Apply the changes other processes committed; returns how many."""

    def staged(self, faces: Placed) -> None:
        """Faces being added to the spaces ``faces`` places them in (a naming: ``people`` only), inside the store's
        write transaction (nothing committed yet)."""

    def added(self, faces: Placed, seqs: list[int]) -> None:
        """Faces added to their spaces: their transaction committed as changes ``seqs`` (the caller holds the write
        lock)."""

    def removed(self, ids: np.ndarray, seqs: list[int]) -> None:
        """Faces deleted from every space: their transaction committed as changes ``seqs`` (the caller holds the
        write lock)."""

    def erase(self, ids: np.ndarray, vectors: list[bytes]) -> None:
        """After a delete (the caller holds the write mutex): no file this keeper wrote may keep these faces'
        vectors (float32 bytes)."""

    def maybe_rebuild(self) -> None:
        """After deletes: rebuild in the background if the index needs it (HNSW tombstones)."""

    def rebuild(self) -> None:
        """Rebuild the index from the store now."""

    def compact(self) -> bool:
        """Drop what the index keeps of deleted vectors; True if it was rebuilt for that."""

    def snapshot(self, *, force: bool = False) -> bool:
        """Persist the index if it changed and the last snapshot was long enough ago (or ``force``), then prune the
        change log it no longer needs."""

    def prepare_switch(self, c: Conn, faces: Placed, seq: int) -> int:
        """Inside the re-embedding's switch transaction: make the next generation's indexes of these faces (the log
        is at ``seq``), persisted beside the current ones; returns the new generation's number."""

    def switched(self, old_model: tuple[str | None, int]) -> None:
        """The switch committed (the caller holds the write lock): serve the new generation, drop the old one's."""

    def close(self) -> None: ...

    def destroy(self) -> None:
        """Close, and drop the vectors kept outside the gallery's folder (Milvus collections): a deleted collection."""


def model_changed(store: Store, model_version: str, dim: int, c: Conn | None = None) -> bool:
    """Whether the stored embeddings are another model's (until a re-embedding there is nothing to index)."""
    return store.get_meta("model_version", c) != model_version or int(store.get_meta("dim", c) or 0) != dim


def check_model(store: Store, model_version: str, dim: int, *, allow_mismatch: bool, location: str) -> None:
    """Record the model of a new gallery; GalleryMismatch if the store holds another model's embeddings (unless
    ``allow_mismatch``: a re-embedding is to come)."""
    with store.transaction() as c:  # replicas starting together: one writes the meta, the others read it
        stored_dim, version = store.get_meta("dim", c), store.get_meta("model_version", c)
        if stored_dim is None:
            store.set_meta(c, "dim", str(dim))
            store.set_meta(c, "model_version", model_version)
            return
    if (int(stored_dim) != dim or version != model_version) and not allow_mismatch:
        raise GalleryMismatch(
            f"gallery {location} was written by model {version} ({stored_dim}-d embeddings); this encoder is "
            f"{model_version} ({dim}-d). Re-embed it from its stored crops (`facesearch gallery reembed`, or start "
            f"with FACESEARCH_REEMBED=auto), or serve it with the model that made it (FACESEARCH_CHECKPOINT)."
        )


def follow(keeper: Keeper, store: Store, closing: threading.Event) -> threading.Thread:
    """A thread that applies the change log to the keeper's index until ``closing`` is set."""

    def run() -> None:
        while not closing.is_set():
            try:
                keeper.catch_up()
                store.wait_for_changes(FOLLOW_POLL_S)
            except StoreUnavailable as e:
                log.warning("following the change log: %s", e)
                closing.wait(FOLLOW_POLL_S)
            except Exception:  # keep following; the next round reads the log again from the same cursor
                log.exception("following the change log failed")
                closing.wait(FOLLOW_POLL_S)

    thread = threading.Thread(target=run, name="gallery-follower", daemon=True)
    thread.start()
    return thread
