"""Searches of one index by concurrent callers, run as one: an exact (flat) index answers a batch of queries with a
matrix product, reading the vectors once for all of them, where one query at a time reads them once each (100,000
512-d faces: 200 MB per query).

One batch runs at a time; the queries that arrive meanwhile wait and go together in the next, run by one of their
callers (dynamic batching, as the encoder's). Callers hold the gallery's read lock while they wait, so the index
cannot change between their asking and the answer: every caller sees the index as it was when it asked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from index.vectors import Vectors


@dataclass(eq=False)
class _Ask:
    index: Vectors
    queries: np.ndarray
    k: int
    result: tuple[np.ndarray, np.ndarray] | None = None
    error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self.result is not None or self.error is not None


class BatchedSearch:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[_Ask] = []
        self._running = False

    def search(self, index: Vectors, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``index.search(queries, k)``, possibly in one call with the queries of other threads."""
        ask = _Ask(index, np.ascontiguousarray(queries, dtype=np.float32), k)
        with self._cond:
            self._waiting.append(ask)
            while not ask.answered:
                if self._running:
                    self._cond.wait()
                    continue
                # no batch runs: this caller runs the next one, with every waiting query of the same index and k
                batch = [a for a in self._waiting if a.index is index and a.k == k]
                self._waiting = [a for a in self._waiting if not (a.index is index and a.k == k)]
                self._running = True
                self._cond.release()
                try:
                    _run(batch)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if ask.error is not None:
            raise ask.error
        assert ask.result is not None
        return ask.result


def _run(batch: list[_Ask]) -> None:
    """One search for the whole batch; each ask gets its rows of the answer (or the error)."""
    try:
        sims, ids = batch[0].index.search(np.concatenate([a.queries for a in batch]), batch[0].k)
    except BaseException as e:  # every caller of the batch gets it
        for a in batch:
            a.error = e
        return
    start = 0
    for a in batch:
        a.result = (sims[start : start + len(a.queries)], ids[start : start + len(a.queries)])
        start += len(a.queries)
