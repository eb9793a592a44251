"""The gallery's reader-writer lock: searches share it, writes take it alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Many readers or one writer; writers are not starved (new readers wait while one is queued)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Locks:
    """A gallery's two locks. Writers queue on ``mutex`` (one writer at a time, also while they only read the store
    or write files), then take ``rw`` alone to change the index; searches share ``rw``."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.rw = RWLock()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self.mutex, self.rw.write():
            yield
