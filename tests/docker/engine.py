"""The Docker side of the container tests: the engine, stand-in base images built from Debian packages (no image
registry is reachable on the test machines), and the project's image built with its own Dockerfile.

Every build and container uses host networking and the tests talk only to 127.0.0.1. Base images are tagged with
a hash of their recipe, so a second run reuses them; the project's image reuses Docker's layer cache.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUITE = "bookworm"
PROJECT_IMAGE = "facesearch:test"


def docker(*args: str, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r


def engine_ready() -> None:
    if shutil.which("docker") is None:
        raise AssertionError("no docker client: install docker.io (.ci/run does)")
    r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"no Docker engine answers (start dockerd as root; .ci/run does): {r.stderr[-500:]}")


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 sources or sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        if path.exists():
            text = path.read_text()
            found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or \
                re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+\S+", text, re.M)
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def _tagged(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def _recipe_hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()[:12]


def debian_base() -> str:
    """local/debian:bookworm from debootstrap (minbase), once per recipe."""
    mirror = debian_mirror()
    tag = f"local/debian:{SUITE}-{_recipe_hash(SUITE, 'minbase', mirror)}"
    if not _tagged(tag):
        with tempfile.TemporaryDirectory(prefix="facesearch-rootfs-") as tmp:
            root = Path(tmp) / "rootfs"
            r = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
                               capture_output=True, text=True, timeout=1800)
            assert r.returncode == 0, f"debootstrap failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            imp = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True,
                                 timeout=600)
            tar.wait()
            assert imp.returncode == 0, imp.stderr
    docker("tag", tag, f"local/debian:{SUITE}")
    return tag


def standin(name: str, tag: str) -> None:
    """Build ``tests/docker/standins/<name>.Dockerfile`` as ``tag`` (FROM the Debian base), once per recipe."""
    base = debian_base()
    dockerfile = (HERE / "standins" / f"{name}.Dockerfile").read_bytes()
    certs = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt")) if name == "python" else []
    extra = [(HERE / "standins" / "postgres-entrypoint.sh").read_bytes()] if name == "postgres" else []
    digest = _recipe_hash(base, dockerfile, *extra, *(c.read_bytes() for c in certs))
    if docker("image", "inspect", "-f", "{{index .Config.Labels \"facesearch.recipe\"}}", tag,
              check=False).stdout.strip() == digest:
        return
    with tempfile.TemporaryDirectory(prefix=f"facesearch-{name}-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_bytes(dockerfile)
        (ctx / "certs").mkdir()
        for c in certs:
            shutil.copy(c, ctx / "certs" / c.name)
        if name == "postgres":
            shutil.copy(HERE / "standins" / "postgres-entrypoint.sh", ctx)
        docker("build", "--network", "host", "--label", f"facesearch.recipe={digest}", "-t", tag, str(ctx),
               timeout=1800, env=_classic())


def _classic() -> dict[str, str]:
    import os

    return {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: BuildKit (buildx) is not installed here


def project_image() -> str:
    """The project's own Dockerfile, built against the stand-in python:3.11-slim."""
    standin("python", "python:3.11-slim")
    docker("build", "--network", "host", "--build-arg", "EXTRAS=[milvus]",
           "-t", PROJECT_IMAGE, str(ROOT), timeout=3600, env=_classic())
    return PROJECT_IMAGE


def build_stage_images() -> list[str]:
    """The untagged build-stage images a build leaves (the Dockerfile labels them; `docker image prune -f --filter
    label=facesearch.stage=build` removes them; kept here between runs as the next build's cache)."""
    out = docker("images", "-q", "--filter", "label=facesearch.stage=build").stdout.split()
    return sorted(set(out))


def image_size_mb(image: str) -> float:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip()) / 1e6
