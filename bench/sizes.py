"""What serving FaceSearch costs on disk: the service's install in a fresh virtual environment, and the Docker image.

    python bench/sizes.py [--docker] --json bench/results/sizes.json

Install: ``python -m venv`` in a temporary folder, then ``pip install .`` (the service's own dependencies, none of
the extras) from a copy of this commit's tree; the folder's bytes (every file under it, as ``du -sb`` counts) and
the seconds the install took (pip's cache as it is: say whether it was warm). ``--docker``: the image
``tests/docker`` builds (the Dockerfile with ``EXTRAS=[milvus]`` on the Debian stand-in for ``python:3.11-slim``;
a Docker engine must run) and its size as ``docker image inspect`` reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import command, machine  # noqa: E402


def folder_bytes(folder: Path) -> int:
    return sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file() or f.is_symlink())


def install() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tree, venv = Path(tmp) / "tree", Path(tmp) / "venv"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        t = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(tree)], check=True)
        took = time.perf_counter() - t
        packages = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True,
                                  text=True, check=True).stdout.split()
        torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
                                "print(bool(u.find_spec('torch')))"], capture_output=True, text=True).stdout.strip()
        return {"what": "python -m venv + pip install . (no extras)", "mb": round(folder_bytes(venv) / 1e6),
                "install_s": round(took, 1), "packages": len(packages), "has_torch": torch == "True",
                "pip_cache": "warm" if Path(os.path.expanduser("~/.cache/pip")).exists() else "cold"}


def image() -> dict[str, object]:
    from tests.docker import engine

    engine.engine_ready()
    t = time.perf_counter()
    tag = engine.project_image()
    return {"what": "the project's Dockerfile, EXTRAS=[milvus], on the stand-in python:3.11-slim", "image": tag,
            "mb": round(engine.image_size_mb(tag)), "build_s": round(time.perf_counter() - t, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docker", action="store_true", help="build the image and measure it too")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    out: dict[str, object] = {"command": command(), **machine(), "install": install()}
    if a.docker:
        out["image"] = image()
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
