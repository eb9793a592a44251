"""End-to-end /v1/search speed with the server in its own process, beside dlib's pipeline on the same photos.

    python bench/api.py [--people N] [--probes 200] [--json PATH] [--data-dir DIR]

Gallery: LFW people enrolled with one photo each (in-process `facesearch enroll`, resumable); the next
photos of people with several are the probes. Reports p50/p99 latency for one client, photos/s with 8
concurrent clients (each probe twice), and dlib's pipeline (HOG + 5-point chip + ResNet for every face,
then a linear scan of its gallery) on the same probes with the same concurrency: 8 worker processes, each
probe twice (dlib's calls hold Python's GIL, so threads would not give it the concurrency our server gets).
Every search response is checked: a face found and a candidate returned, or the run fails. The server
inherits FACESEARCH_* settings from the environment (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from facesearch.client import FaceSearch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"
CLIENTS = 8


def post_search(fs: FaceSearch, data: bytes) -> float:
    """One /v1/search through the client library (its connection kept alive, as an app's); seconds it took."""
    t = time.perf_counter()
    body = fs.search(data)
    if not body.faces or not body.faces[0].candidates:
        raise RuntimeError(f"search answered without a face and a candidate: {str(body)[:300]}")
    return time.perf_counter() - t


_dlib_gallery: np.ndarray | None = None


def _dlib_init(gallery: np.ndarray) -> None:
    global _dlib_gallery
    _dlib_gallery = gallery
    from model.train.teacher import dlib_pipeline

    dlib_pipeline()  # load the models once per worker


def dlib_search(path: Path) -> int:
    """dlib's pipeline on one photo: every HOG face embedded and scanned against the gallery (top 5)."""
    from PIL import Image

    from model.train.teacher import dlib_pipeline

    hog, predictor, resnet = dlib_pipeline()
    assert _dlib_gallery is not None
    img = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
    n = 0
    for box in hog(img, 1):
        e = np.asarray(resnet.compute_face_descriptor(img, predictor(img, box)), np.float32)
        np.argsort(np.linalg.norm(_dlib_gallery - e, axis=1))[:5]
        n += 1
    return n


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 180) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=2) as r:
                if r.status == 200:
                    return dict(json.loads(r.read()))
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--people", type=int, default=0, help="enroll only the first N people (0: all)")
    p.add_argument("--probes", type=int, default=200)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--no-dlib", action="store_true")
    p.add_argument("--dlib-gallery", type=int, default=500,
                   help="people in dlib's gallery (its linear scan costs microseconds; encoding the gallery "
                        "costs minutes, and is not what is timed)")
    a = p.parse_args()
    people = sorted(d.name for d in LFW.iterdir() if d.is_dir())
    if a.people:
        people = people[: a.people]
    work = a.data_dir or Path(tempfile.mkdtemp(prefix="fs-api-"))
    tree = work / "tree"
    if not tree.exists():
        tree.mkdir(parents=True)
        for name in people:
            (tree / name).mkdir()
            os.symlink(LFW / name / f"{name}_0001.jpg", tree / name / f"{name}_0001.jpg")
    env = {**os.environ, "FACESEARCH_DATA_DIR": str(work / "data")}
    exe = str(Path(sys.executable).parent / "facesearch")
    subprocess.run([exe, "enroll", str(tree)], env=env, check=True)
    probes = [LFW / n / f"{n}_0002.jpg" for n in people if (LFW / n / f"{n}_0002.jpg").exists()][: a.probes]
    blobs = [x.read_bytes() for x in probes]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out: dict[str, float] = {}
    try:
        info = wait_ready(url, server)
        out["ready_s"] = time.perf_counter() - started  # process start to /health/ready (models loaded, warmed up)
        out["gallery_faces"] = info["gallery_faces"]
        fs = FaceSearch(url, retries=0)
        for b in blobs[:10]:
            post_search(fs, b)
        lat = sorted(post_search(fs, b) for b in blobs)
        out["search_p50_ms"] = statistics.median(lat) * 1000
        out["search_p99_ms"] = lat[int(0.99 * (len(lat) - 1))] * 1000
        t = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda b: post_search(fs, b), blobs * 2))
        out["photos_per_s_c8"] = 2 * len(blobs) / (time.perf_counter() - t)
        out["probes"] = len(blobs)
        fs.close()
    finally:
        server.terminate()
        server.wait(30)
    if not a.no_dlib:
        from model.train.teacher import dlib_embedding

        gallery = np.stack([dlib_embedding(LFW / n / f"{n}_0001.jpg")[0] for n in people[: a.dlib_gallery]])
        with ProcessPoolExecutor(CLIENTS, initializer=_dlib_init, initargs=(gallery,)) as procs:
            list(procs.map(dlib_search, probes[:CLIENTS]))  # warm-up: every worker has loaded its models
            t = time.perf_counter()
            faces = list(procs.map(dlib_search, probes * 2))
            out["dlib_photos_per_s_c8"] = 2 * len(probes) / (time.perf_counter() - t)
        out["dlib_faces_found"] = sum(faces) / 2
        out["dlib_gallery_faces"] = len(gallery)
        out["ratio_c8_vs_dlib_c8"] = out["photos_per_s_c8"] / out["dlib_photos_per_s_c8"]
    settings = {k: v for k, v in os.environ.items() if k.startswith("FACESEARCH_")}
    for k, v in out.items():
        print(f"{k:24s} {v:,.2f}")
    print("server settings from the environment:", settings or "defaults")
    info = machine()
    print(json.dumps(info))
    if a.json:
        a.json.write_text(json.dumps({**out, "server_env": settings, **info}, indent=2))
    if a.data_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
