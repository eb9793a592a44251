"""Concurrent searches of one index: those that arrive while a search runs go together in the next call, each caller
getting exactly its own rows of the answer; an error reaches every caller of its batch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from index.batched_search import BatchedSearch
from index.vectors import VectorIndex

DIM = 32


class Counting:
    """An index that counts its searches and takes its time over each (queries arrive while one runs)."""

    def __init__(self, index: VectorIndex, fail: bool = False) -> None:
        self.index, self.calls, self.fail = index, 0, fail

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        time.sleep(0.5)
        if self.fail:
            raise RuntimeError("the index failed")
        return self.index.search(q, k)


def test_concurrent_callers_share_one_search_and_get_their_own_rows() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2_000, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = VectorIndex(DIM, "exact")
    index.add(np.arange(1, len(vecs) + 1, dtype=np.int64), vecs)
    counting = Counting(index)
    batched = BatchedSearch()
    queries = [vecs[n * 7 : n * 7 + 1 + n % 3] for n in range(8)]  # 1 to 3 rows each
    got: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    start = threading.Barrier(8)

    def ask(n: int) -> None:
        start.wait()
        got[n] = batched.search(counting, queries[n], 5)  # type: ignore[arg-type]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.calls < 8  # callers that arrived while a search ran shared the next
    for n, q in enumerate(queries):
        sims, ids = index.search(q, 5)
        assert np.array_equal(got[n][1], ids) and np.allclose(got[n][0], sims)
        assert got[n][1][0, 0] == n * 7 + 1  # each query finds itself first


def test_every_caller_of_a_failed_batch_gets_the_error() -> None:
    index = VectorIndex(DIM, "exact")
    index.add(np.array([1], np.int64), np.ones((1, DIM), np.float32) / np.sqrt(DIM))
    batched, failing = BatchedSearch(), Counting(index, fail=True)
    errors: list[str] = []
    start = threading.Barrier(4)

    def ask() -> None:
        start.wait()
        with pytest.raises(RuntimeError) as e:
            batched.search(failing, np.ones((1, DIM), np.float32), 1)  # type: ignore[arg-type]
        errors.append(str(e.value))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == ["the index failed"] * 4
