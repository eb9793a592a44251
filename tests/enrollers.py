"""Client threads that keep enrolling new identities while a test kills or stops something underneath them
(tests/app/test_replicas.py: replica processes and PostgreSQL; tests/docker/test_docker.py: a replica container
behind nginx). What the servers acknowledge is kept with its face ids, to be looked for afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import LFW

NAMES = sorted(d.name for d in LFW.iterdir() if (d / f"{d.name}_0003.jpg").exists())[:200]
ACK_TIMEOUT_S = 600  # waits for acknowledgements are this long: a loaded machine is slow, not wrong

Enroll = Callable[[Any, str, str, float], tuple[int, Any]]  # (server, identity, LFW name, timeout) -> answer
# (server, (status, body) or None, the OSError or None, when the request began (time.monotonic())) -> tolerated
Tolerate = Callable[[Any, "tuple[int, Any] | None", "OSError | None", float], bool]


class Enrollers:
    """One thread per entry of ``servers``, each enrolling two photos per new identity. Every outcome but an
    acknowledgement or a 4xx with an error code fails the test, but for the ones ``tolerate`` allows (a killed
    replica's refused connections or 502s, 503 + store_unavailable while PostgreSQL is down)."""

    def __init__(self, servers: list[Any], enroll: Enroll, tolerate: Tolerate) -> None:
        self.acked: dict[str, list[int]] = {}
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self._counter = iter(range(10**6))
        self._enroll, self._tolerate = enroll, tolerate
        self.threads = [threading.Thread(target=self._run, args=(s,)) for s in servers]
        for t in self.threads:
            t.start()

    def _run(self, server: Any) -> None:
        where = getattr(server, "url", server)
        try:
            while not self.stop.is_set():
                i = next(self._counter)
                name = NAMES[i % len(NAMES)]
                ident = f"{i}-{name}"
                began = time.monotonic()
                try:
                    status, body = self._enroll(server, ident, name, ACK_TIMEOUT_S)
                except OSError as e:
                    if self._tolerate(server, None, e, began):
                        return
                    raise
                with self.cond:
                    if status == 201:
                        self.acked[ident] = sorted(f["face_id"] for f in body["faces"])
                        self.cond.notify_all()
                    elif not (isinstance(body, dict) and "code" in body and status < 500
                              or self._tolerate(server, (status, body), None, began)):
                        self.errors.append(f"{ident} via {where} answered {status} {body}")
        except BaseException as e:  # every unexpected failure of a client fails the test
            with self.cond:
                self.errors.append(f"client of {where} failed: {e!r}")
                self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        """Until ``n`` enrollments in all were acknowledged (or a client failed)."""
        with self.cond:
            self.cond.wait_for(lambda: len(self.acked) >= n or bool(self.errors), timeout=ACK_TIMEOUT_S)
            assert not self.errors, self.errors[:5]
            assert len(self.acked) >= n, f"only {len(self.acked)} of {n} enrollments acknowledged"

    def finish(self) -> dict[str, list[int]]:
        self.stop.set()
        for t in self.threads:
            t.join()
        assert not self.errors, self.errors[:5]
        return dict(self.acked)
