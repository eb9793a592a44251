"""A gallery's two search spaces, each its own vector index, so that neither search pays for what the other holds.

``people``: the faces of an identity (enrolled, or a photo's face someone named): what identity search compares a
face with. ``photos``: the faces found in photos, named or not: what photo search and clustering compare with. An
enrolled face is in ``people`` only, an unnamed photo face in ``photos`` only, a named photo face in both. A face
enters ``people`` when it is named and leaves both when it is deleted; nothing else moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Space = Literal["people", "photos"]
SPACES: tuple[Space, ...] = ("people", "photos")


@dataclass(frozen=True)
class Placed:
    """Faces and the spaces they belong to. ids: int64 (n,); vectors: float32 (n, D); named, in_photo: bool (n,)."""

    ids: np.ndarray
    vectors: np.ndarray
    named: np.ndarray
    in_photo: np.ndarray

    @classmethod
    def of(cls, ids: np.ndarray | list[int], vectors: np.ndarray, *, named: np.ndarray | list[bool] | bool,
           in_photo: np.ndarray | list[bool] | bool) -> Placed:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        return cls(ids, vectors.reshape(n, vectors.shape[-1] if vectors.size == 0 else -1),
                   np.broadcast_to(np.asarray(named, dtype=bool), (n,)).copy(),
                   np.broadcast_to(np.asarray(in_photo, dtype=bool), (n,)).copy())

    @classmethod
    def empty(cls, dim: int) -> Placed:
        return cls.of([], np.zeros((0, dim), np.float32), named=False, in_photo=False)

    @classmethod
    def concat(cls, parts: list[Placed], dim: int) -> Placed:
        if not parts:
            return cls.empty(dim)
        return cls(np.concatenate([p.ids for p in parts]), np.concatenate([p.vectors for p in parts]),
                   np.concatenate([p.named for p in parts]), np.concatenate([p.in_photo for p in parts]))

    def __len__(self) -> int:
        return len(self.ids)

    def member(self, space: Space) -> np.ndarray:
        """bool (n,): which of the faces belong to ``space``."""
        return self.named if space == "people" else self.in_photo

    def into(self, space: Space) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (m,), vectors float32 (m, D)) of the faces that belong to ``space``."""
        m = self.member(space)
        return self.ids[m], self.vectors[m]
