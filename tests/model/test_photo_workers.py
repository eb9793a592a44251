"""The photo workers (model.photo_workers): the same analysis as in the calling process, errors that keep their
type, workers that come back after being killed, and none left behind when the service ends or is killed."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.analysis import analyze_photo
from model.embedder import make_aligner
from model.errors import InvalidImage, UnsupportedImageType
from model.faces import FaceDetector
from model.photo_workers import PhotoWorkers, WorkerSpec
from tests.conftest import LFW, ROOT, living, wait_gone

MAX_PIXELS = 40_000_000


def spec_of(pipeline, **encoder_changes) -> WorkerSpec:  # type: ignore[no-untyped-def]
    return WorkerSpec(min_face_size=20, max_side=1024, threads=1, max_pixels=MAX_PIXELS,
                      encoder=replace(pipeline.embedder.config, **encoder_changes))


@pytest.fixture(scope="module")
def workers(pipeline):  # type: ignore[no-untyped-def]
    w = PhotoWorkers(2, spec_of(pipeline))
    yield w
    w.close()


def test_workers_analyse_as_the_calling_process_does(workers, pipeline, lfw: Path) -> None:  # type: ignore[no-untyped-def]
    detector = FaceDetector(pipeline.embedder.config.detector, min_face_size=20, max_side=1024, threads=1)
    aligner = make_aligner(pipeline.embedder.config)
    for name in ("Aaron_Peirsol", "Colin_Powell", "Serena_Williams"):
        data = (lfw / name / f"{name}_0001.jpg").read_bytes()
        here = analyze_photo(detector, aligner, data, max_pixels=MAX_PIXELS, max_faces=20, sources=True)
        for alone in (True, False):
            there = workers.analyze(data, max_faces=20, sources=True, alone=alone)
            assert (there.width, there.height, there.faces_found) == (here.width, here.height, here.faces_found)
            assert here.faces and len(there.faces) == len(here.faces)
            for a, b in zip(there.faces, here.faces, strict=True):
                np.testing.assert_allclose(a.face.box, b.face.box, atol=1e-3)
                np.testing.assert_allclose(a.face.landmarks, b.face.landmarks, atol=1e-3)
                assert np.abs(a.crop.astype(int) - b.crop.astype(int)).max() <= 1
                assert a.source is not None and b.source is not None  # the same pixels, losslessly encoded there
                assert Image.open(io.BytesIO(a.source)).size == Image.open(io.BytesIO(b.source)).size
                assert a.source_geometry is not None and a.embedding is None


def test_a_bad_photo_raises_its_own_error_and_the_worker_goes_on(workers, lfw: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidImage, match="empty upload"):
        workers.analyze(b"", max_faces=1, sources=False, alone=True)
    with pytest.raises(UnsupportedImageType):
        workers.analyze(b"%PDF-1.7 not a photo", max_faces=1, sources=False, alone=True)
    with pytest.raises(InvalidImage):
        workers.analyze(b"\xff\xd8\xff\xe0 truncated jpeg", max_faces=1, sources=False, alone=True)
    restarts = workers.restarts
    data = (lfw / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    assert workers.analyze(data, max_faces=1, sources=False, alone=True).faces
    assert workers.restarts == restarts


def test_killed_workers_are_started_again_and_the_photo_still_answered(workers, lfw: Path) -> None:  # type: ignore[no-untyped-def]
    data = (lfw / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    restarts, before = workers.restarts, workers.pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone(before) == []
    # two calls at once take both workers (the first holds its worker while starting it again, for seconds)
    start = threading.Barrier(2)

    def one(_: int) -> int:
        start.wait()
        return len(workers.analyze(data, max_faces=1, sources=False, alone=False).faces)

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(one, range(2))) == [1, 1]
    after = workers.pids()
    assert len(after) == 2 and not set(after) & set(before)
    assert workers.restarts == restarts + 2


def test_workers_dying_in_a_row_are_restarted_later_and_later(workers, lfw: Path) -> None:  # type: ignore[no-untyped-def]
    """Restarts back off: the first RESTART_FREE within a minute start at once, then each waits twice as long (up to
    RESTART_MAX_S); the photos are still answered."""
    from model.photo_workers import RESTART_BASE_S, RESTART_FREE, RESTART_MAX_S, restart_delay

    assert [restart_delay(n) for n in range(1, RESTART_FREE + 1)] == [0.0] * RESTART_FREE
    assert restart_delay(RESTART_FREE + 1) == RESTART_BASE_S and restart_delay(RESTART_FREE + 2) == 2 * RESTART_BASE_S
    assert restart_delay(RESTART_FREE + 50) == RESTART_MAX_S
    data = (lfw / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    workers._restarted = [time.monotonic()] * RESTART_FREE  # as if RESTART_FREE workers had just died
    before = workers.pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone(before) == []
    # the photo takes a dead worker, which starts again after RESTART_BASE_S
    assert len(workers.analyze(data, max_faces=1, sources=False, alone=False).faces) == 1
    assert len(workers._restarted) == RESTART_FREE + 1 and len(set(before) - set(workers.pids())) == 1


def test_a_worker_that_cannot_start_says_why_and_leaves_no_process(pipeline) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="unknown chip"):
        PhotoWorkers(2, spec_of(pipeline, chip="no-such-chip"))


def test_workers_end_with_the_process_that_started_them_even_when_it_is_killed(tmp_path: Path) -> None:
    """Closed, the workers end; their parent SIGKILLed (no chance to close them), they end too."""
    script = tmp_path / "parent.py"  # no __main__ guard: workers must not need one
    script.write_text(textwrap.dedent("""
        import sys, time
        from model.pipeline import FacePipeline
        p = FacePipeline(threads=1, photo_workers=2)
        print(" ".join(str(pid) for pid in p.workers.pids()), flush=True)
        if sys.argv[1] == "close":
            p.close()
            print("closed", flush=True)
        time.sleep(600)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for how in ("close", "kill"):
        proc = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, text=True, env=env,
                                cwd=tmp_path)
        try:
            assert proc.stdout is not None
            pids = [int(p) for p in proc.stdout.readline().split()]
            assert len(pids) == 2 and living(pids) == pids
            if how == "close":
                assert proc.stdout.readline().strip() == "closed"
            else:
                proc.kill()
            assert wait_gone(pids) == [], f"workers left running after the parent's {how}"
        finally:
            proc.kill()
            proc.wait()


def test_workers_start_without_the_services_secrets(pipeline, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FACESEARCH_API_KEYS", "secret-key-123")
    monkeypatch.setenv("FACESEARCH_DATABASE_URL", "postgresql://user:password@db/facesearch")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    w = PhotoWorkers(1, spec_of(pipeline))
    try:
        (pid,) = w.pids()
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert "FACESEARCH_API_KEYS" not in names and "FACESEARCH_DATABASE_URL" not in names
        assert b"secret-key-123" not in b"".join(environ) and b"password" not in b"".join(environ)
        assert {"PATH", "PYTHONPATH", "OMP_NUM_THREADS"} <= names
        assert w.analyze((LFW / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes(), max_faces=5, sources=False,
                         alone=True).faces  # and it works
    finally:
        w.close()


def test_workers_import_the_services_code_whatever_folder_it_started_in(pipeline, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``model`` folder where the service was started (another checkout, a user's folder) is not what a worker
    runs: it would be code nobody reviewed decoding untrusted files, or answers the service cannot read."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("raise ImportError('the folder the service started in')\n")
    monkeypatch.chdir(tmp_path)
    w = PhotoWorkers(1, spec_of(pipeline))
    try:
        assert w.analyze((LFW / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes(), max_faces=5, sources=True,
                         alone=True).faces[0].source
    finally:
        w.close()


def test_a_hung_worker_is_replaced_and_the_photo_answered_within_the_timeout(pipeline) -> None:  # type: ignore[no-untyped-def]
    """A worker that stops answering (SIGSTOP: a decoder in an endless loop looks the same) costs its photo the
    timeout, not the service: the call raises AnalysisTimeout, the worker is killed and replaced, the next photo is
    analysed."""
    import time

    from model.errors import AnalysisTimeout

    w = PhotoWorkers(1, spec_of(pipeline), timeout=2.0)
    photo = (LFW / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    try:
        (hung,) = w.pids()
        os.kill(hung, signal.SIGSTOP)
        t = time.monotonic()
        with pytest.raises(AnalysisTimeout, match="longer than 2 s"):
            w.analyze(photo, max_faces=5, sources=False, alone=True)
        assert time.monotonic() - t < 2.0 + 30  # the timeout, and a fresh worker's start
        assert wait_gone([hung]) == []
        (fresh,) = w.pids()
        assert fresh != hung and living([fresh]) == [fresh] and w.restarts == 1
        assert w.analyze(photo, max_faces=5, sources=False, alone=True).faces
    finally:
        w.close()
