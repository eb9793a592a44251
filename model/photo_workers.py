"""Photo analysis (:func:`model.analysis.analyze_photo`: decode, detect, align, quality) in worker processes.

Why processes: MTCNN's cascade between its network calls, dlib's shape predictor and chip, and the HTTP layer all
hold Python's GIL; with requests in threads of one process, the two cores sat idle a sixth of the time at
concurrency 8 waiting for it (server CPU 1.63 of 2 cores), and two whole servers side by side served 61-64 photos/s
where one served 55. Here each worker process analyses one photo at a time with a GIL of its own; the service's
process keeps HTTP, the encoder's batches and the gallery.

A worker is a fresh interpreter (never a fork: ONNX Runtime's and OpenBLAS's threads do not survive one; nor
multiprocessing's spawn, which re-runs the caller's main script) talking over a socket pair: the calling thread sends
the photo's bytes and receives the :class:`~model.analysis.Analysis`, with no executor threads in between. A
worker that dies (killed, or crashed by a decoder on a hostile file) is started again; its photo is tried once more
on the new worker, and refused as unreadable if that one dies too.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.analysis import Analysis
from model.errors import AnalysisTimeout, InvalidImage

if TYPE_CHECKING:
    from model.embedder import EncoderConfig

log = logging.getLogger(__name__)
# restarts back off: RESTART_FREE restarts within RESTART_WINDOW_S start at once, then each waits twice as long
RESTART_WINDOW_S, RESTART_FREE, RESTART_BASE_S, RESTART_MAX_S = 60, 4, 0.5, 8.0
ROOT = Path(__file__).resolve().parents[1]  # where `model` is imported from, for the workers' imports

TIMED_OUT = ("analysing this photo took longer than {timeout:g} s (FACESEARCH_PHOTO_TIMEOUT); its worker process was "
             "stopped and replaced")
BUSY = "no photo worker became free within {timeout:g} s (FACESEARCH_PHOTO_TIMEOUT): the service is overloaded"
STOPPED_TWICE = ("analysing this photo stopped the worker process twice (on a fresh worker too): the file is not a "
                 "photo this service can read")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker builds at start: the detector's settings and the encoder's chip (its config's aligner)."""

    min_face_size: int
    max_side: int
    threads: int
    max_pixels: int
    encoder: EncoderConfig


class WorkerDied(Exception):
    """The worker process ended while it had a photo."""


class WorkerHung(Exception):
    """The worker did not answer in time; it has been killed."""


# What a worker inherits of the service's environment: how to find Python, its libraries and a temporary folder, and
# the math libraries' thread settings. Never the service's secrets (API keys, database URLs): a worker decodes
# untrusted files, and a decoder bug there must not find them.
WORKER_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "SYSTEMROOT")
WORKER_ENVIRONMENT_PREFIXES = ("OMP_", "OPENBLAS_", "MKL_", "ORT_")


def worker_environment() -> dict[str, str]:
    """The variables a worker starts with: :data:`WORKER_ENVIRONMENT`, the thread settings, and ``PYTHONPATH``
    leading to the ``model`` package the service imported."""
    env = {k: v for k, v in os.environ.items() if k in WORKER_ENVIRONMENT or k.startswith(WORKER_ENVIRONMENT_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


class _Worker:
    """One worker process (``python -m model.photo_workers``) and the service's end of its socket."""

    def __init__(self, spec: WorkerSpec, number: int) -> None:
        self.number = number
        ours, theirs = socket.socketpair()
        with theirs:
            # -P: the working folder is not put first on the worker's path, so its ``model`` is the service's (ROOT,
            # by PYTHONPATH), never a folder of that name where the service happened to be started
            self.process = subprocess.Popen([sys.executable, "-P", "-m", "model.photo_workers", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], env=worker_environment())
        self.conn = Connection(ours.detach())
        self.conn.send(spec)

    def ready(self) -> None:
        """Wait until the worker has built its detector; raise its start-up error."""
        status, value = self._receive()
        if status != "ready":
            self.stop()
            raise value

    def analyze(self, data: bytes, *, max_faces: int, sources: bool, alone: bool, timeout: float | None) -> Analysis:
        try:
            self.conn.send((data, max_faces, sources, alone))
        except OSError as e:
            raise WorkerDied(f"photo worker {self.number} stopped ({e})") from e
        if timeout and not self.conn.poll(timeout):  # hung (stopped, or a decoder in a loop): never waited on again
            self.process.kill()
            self.process.wait()
            raise WorkerHung(f"photo worker {self.number} did not answer within {timeout:g} s")
        status, value = self._receive()
        if status != "ok":
            raise value
        result: Analysis = value
        return result

    def _receive(self) -> tuple[str, Any]:
        try:
            message: tuple[str, Any] = self.conn.recv()
            return message
        except (EOFError, OSError) as e:
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            raise WorkerDied(f"photo worker {self.number} stopped (exit code {self.process.returncode})") from e

    def stop(self, timeout: float = 5.0) -> None:
        with suppress(OSError):
            self.conn.send(None)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


class PhotoWorkers:
    """``n`` worker processes analysing photos; :meth:`analyze` may be called from any number of threads (each
    call waits for an idle worker). ``timeout``: seconds a photo may take, and a call may wait for a worker (None:
    no limit); a worker past it is killed and replaced, and the call raises :class:`~model.errors.AnalysisTimeout`."""

    def __init__(self, n: int, spec: WorkerSpec, *, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.spec = spec
        self._all = [_Worker(spec, i) for i in range(n)]  # all start at once, then each is waited for
        try:
            for w in self._all:
                w.ready()
        except BaseException:
            for w in self._all:
                w.stop(timeout=1)
            raise
        # the worker idle for the shortest time goes first: its caches and threads are warm (a lone request took
        # 1.5 ms longer when the workers took turns)
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        for w in self._all:
            self._idle.put(w)
        self._lock = threading.Lock()
        self.restarts = 0
        self._restarted: list[float] = []  # when workers were restarted, within RESTART_WINDOW_S

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._all]

    def analyze(self, data: bytes, *, max_faces: int, sources: bool, alone: bool) -> Analysis:
        """One photo's :class:`Analysis`; ``alone``: its networks may run on every core (no other request is
        computing). Raises the worker's ImageError for a bad photo, :class:`~model.errors.InvalidImage` when the
        photo stopped two workers in turn."""
        for attempt in (1, 2):
            try:
                worker = self._idle.get(timeout=self.timeout)
            except queue.Empty:
                raise AnalysisTimeout(BUSY.format(timeout=self.timeout)) from None
            try:
                return worker.analyze(data, max_faces=max_faces, sources=sources, alone=alone, timeout=self.timeout)
            except WorkerHung as e:
                log.warning("%s; starting it again", e)
                worker = self._restart(worker)
                raise AnalysisTimeout(TIMED_OUT.format(timeout=self.timeout)) from e
            except WorkerDied as e:
                log.warning("%s while analysing a photo (attempt %d); starting it again", e, attempt)
                worker = self._restart(worker)
            finally:
                self._idle.put(worker)
        raise InvalidImage(STOPPED_TWICE)

    def _restart(self, dead: _Worker) -> _Worker:
        dead.stop(timeout=1)
        with self._lock:
            now = time.monotonic()
            self._restarted = [t for t in self._restarted if now - t < RESTART_WINDOW_S] + [now]
            delay = restart_delay(len(self._restarted))
        if delay:  # workers dying in a row (hostile photos, a broken machine): do not spin on starting them
            log.warning("%d photo workers restarted in the last %d s: waiting %.1f s before the next start",
                        len(self._restarted), RESTART_WINDOW_S, delay)
            time.sleep(delay)
        fresh = _Worker(self.spec, dead.number)
        fresh.ready()
        with self._lock:
            self._all[self._all.index(dead)] = fresh
            self.restarts += 1
        return fresh

    def close(self) -> None:
        """Stop every worker (waiting for those analysing a photo to finish it)."""
        for _ in self._all:
            try:
                self._idle.get(timeout=10).stop()
            except queue.Empty:
                break
        for w in self._all:  # any still busy after the wait
            if w.process.poll() is None:
                w.process.kill()
                w.process.wait()


def restart_delay(recent: int) -> float:
    """Seconds to wait before starting a worker again, ``recent`` restarts (this one included) within
    RESTART_WINDOW_S: none for the first RESTART_FREE, then doubling from RESTART_BASE_S up to RESTART_MAX_S."""
    if recent <= RESTART_FREE:
        return 0.0
    return float(min(RESTART_MAX_S, RESTART_BASE_S * 2 ** (recent - RESTART_FREE - 1)))


def _serve(conn: Connection) -> None:
    """A worker's life: build the detector and aligner, then analyse photos until told to stop or the service's
    end of the socket closes (the service ended, however it ended)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the service stops us
    try:
        spec: WorkerSpec = conn.recv()
        from threadpoolctl import threadpool_limits

        from model.analysis import analyze_photo
        from model.embedder import make_aligner
        from model.faces import FaceDetector
        from model.onnx_runtime import CORES

        threadpool_limits(1, user_api="blas")  # one photo per process: BLAS's small products on this thread
        detector = FaceDetector(spec.encoder.detector, min_face_size=spec.min_face_size, max_side=spec.max_side,
                                threads=spec.threads)
        aligner = make_aligner(spec.encoder)
        warm = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
        for width in (nullcontext(), CORES.shared()):  # each network's session alone and beside others
            with width:
                detector.detect(warm)
    except Exception as e:
        _send(conn, ("error", e))
        return
    _send(conn, ("ready", None))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        data, max_faces, sources, alone = task
        try:
            # networks run on every core only when the service said no other request computes
            with nullcontext() if alone else CORES.shared():
                result: tuple[str, Any] = ("ok", analyze_photo(detector, aligner, data, max_pixels=spec.max_pixels,
                                                               max_faces=max_faces, sources=sources))
        except Exception as e:
            result = ("error", e)
        _send(conn, result)


def _send(conn: Connection, message: tuple[str, Any]) -> None:
    try:
        conn.send(message)
    except (EOFError, OSError):
        raise
    except Exception as e:  # an exception that does not pickle: its text does
        conn.send(("error", RuntimeError(f"{type(message[1]).__name__}: {message[1]} ({e})")))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
