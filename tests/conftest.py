"""Shared fixtures: real faces from ../shared/datasets, apps on tmp data folders."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACESEARCH_SHARED", ROOT.parent / "shared"))
ORL = SHARED / "datasets" / "orl"
LFW = SHARED / "datasets" / "lfw" / "lfw-deepfunneled"

os.environ.setdefault("FACESEARCH_TORCH_THREADS", "2")


def _offline_torch_hub() -> None:
    """torchvision's ImageNet MobileNetV2 weights from ../shared/weights, where its weights API looks first
    (no download: these machines are offline)."""
    src = SHARED / "weights" / "mobilenet_v2-b0353104.pth"
    home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    dst = home / "hub" / "checkpoints" / src.name
    if src.exists() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)


_offline_torch_hub()


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the tests read ../shared/datasets)")
    return path


@pytest.fixture(scope="session")
def orl() -> Path:
    return _require(ORL)


@pytest.fixture(scope="session")
def lfw() -> Path:
    return _require(LFW)


def jpeg_bytes(path: Path, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def orl_photo(person: int, index: int, scale: int = 2) -> bytes:
    """An ORL face (92x112 greyscale) upscaled, as JPEG bytes: MTCNN wants faces > 20 px."""
    img = Image.open(_require(ORL / f"s{person}" / f"{index}.pgm")).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def lfw_photo(name: str, index: int = 1) -> bytes:
    return (_require(LFW) / name / f"{name}_{index:04d}.jpg").read_bytes()


@pytest.fixture(autouse=True, scope="session")
def testclient_host() -> Iterator[None]:
    """Starlette's TestClient addresses the app as ``testserver``: a name open mode allows only when told to (it
    answers loopback names by itself). Session-wide, before any app of any fixture scope is made."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("FACESEARCH_ALLOWED_HOSTS", "testserver")
        yield


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def pipeline() -> Iterator[object]:
    from model.pipeline import FacePipeline

    p = FacePipeline(threads=2)
    yield p
    p.close()


def rss_kb(pid: int | None = None) -> int:
    """Resident memory in kB of a process (default: this one) and its child processes (the photo workers)."""
    pid = pid or os.getpid()

    def own(p: int) -> int:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except FileNotFoundError:  # ended meanwhile
            pass
        return 0

    return own(pid) + sum(own(c) for c in children(pid))


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def living(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (not ended, nor ended and waiting for their parent to read their exit)."""
    out = []
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(p)
        except FileNotFoundError:
            pass
    return out


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    """Wait until none of ``pids`` is :func:`living` (or ``timeout`` s passed); those still living."""
    deadline = time.monotonic() + timeout
    while living(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return living(pids)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`facesearch serve` as a real subprocess on a loopback port."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        import shutil
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("facesearch", path=str(Path(sys.executable).parent)) or "facesearch"
        full_env = {**os.environ, "FACESEARCH_DATA_DIR": str(data_dir), "FACESEARCH_PORT": str(self.port), **env}
        # the log goes to a file (an unread pipe fills up and blocks the server's event loop), beside the
        # data folder, i.e. in the test's own temporary folder
        self.log_path = Path(data_dir).parent / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen([exe, "serve"], env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError("server did not become ready")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self._log.close()


@pytest.fixture
def server_factory() -> Iterator[object]:
    servers: list[Server] = []

    def make(data_dir: Path, **env: str) -> Server:
        s = Server(data_dir, **env)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One throwaway PostgreSQL server for the session (started on first use)."""
    from tests.postgres import Cluster

    cluster = Cluster(free_port())
    yield cluster
    cluster.remove()


@pytest.fixture
def pg_url(pg_cluster: object) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, dropped after the test."""
    url = pg_cluster.new_database()  # type: ignore[attr-defined]
    yield url
    pg_cluster.drop_database(url)  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The store a parametrised suite runs on: None (SQLite under the data folder) or a PostgreSQL database."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
