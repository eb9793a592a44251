"""A photo library at scale: identity search and photo indexing through the HTTP API, whatever the gallery's photos
hold; and deleting an album of 10,000 faces from the largest gallery while searches go on.

    python bench/photos_scale.py --sizes 0,100000,1000000 [--kind exact] [--json PATH]
    python bench/photos_scale.py --library-lfw-folds [--json PATH]

For each size N: a gallery with N unnamed photo faces (synthetic random unit vectors, the bulk: not faces of
anyone; written through ``Gallery.photos.add`` as photos of 2,000 faces in albums of 10,000), then the service
(`facesearch serve`, its own process, default settings but ``--kind``: identity search's index; the photo faces are
in a graph whatever it is, index.local_keeper.space_kind) on it, and through its API: 100 LFW people enrolled (their
first photo), ``/v1/search`` p50 over 100 of their second photos (one client), and indexing ``POST /v1/photos`` of
group photos of three LFW people side by side (people outside those enrolled; 8 clients, as an importer would):
photos/s and faces/s. At the largest size, ``DELETE /v1/albums/a0`` (10,000 bulk faces) is timed while one client
keeps searching (searches answered meanwhile and their slowest latency). Every answer is checked.

Like for like: beside each size's service, a second service on an empty gallery gets the same enrolments, searches
and photos in the same minutes (searches alternated probe by probe; its photos in two halves, before and after this
size's), so that ``search_p50_vs_empty`` and ``index_rate_vs_empty`` compare two sides measured together (the
``empty_*`` fields) rather than two parts of a run a quarter of an hour apart.

``--library-lfw-folds``: ``facesearch photos index`` (in process, default settings) on every photo of LFW's folds
1-2 people (a folder of links), into an empty gallery; its summary (photos, faces, rates).
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command, group_photo, machine  # noqa: E402
from facesearch.client import FaceSearch, Unavailable, Unreachable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"
CARD = ROOT / "model" / "weights" / "model_card.json"
PER_PHOTO, PER_ALBUM, ENROLLED, GROUPS, CLIENTS = 2_000, 10_000, 100, 150, 8


def bulk(folder: Path, n: int, kind: str) -> float:
    """A gallery of ``n`` unnamed photo faces (random unit vectors); returns seconds taken."""
    from index.gallery import Gallery
    from index.records import NewFace, NewPhoto

    card = json.loads(CARD.read_text())
    dim = int(card["embedding_size"])
    t = time.perf_counter()
    g = Gallery(folder, dim=dim, model_version=card["model_version"], kind=kind)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    try:
        for start in range(0, n, PER_PHOTO):
            x = rng.standard_normal((min(PER_PHOTO, n - start), dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            g.photos.add(NewPhoto(f"bulk-{start // PER_PHOTO}", f"a{start // PER_ALBUM}"),
                         [(None, NewFace(v)) for v in x], cluster_within=None)
    finally:
        g.close()
    return time.perf_counter() - t


def serve(data_dir: Path, kind: str) -> tuple[subprocess.Popen, str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FACESEARCH_DATA_DIR": str(data_dir), "FACESEARCH_INDEX_KIND": kind}
    exe = str(Path(sys.executable).parent / "facesearch")
    t = time.perf_counter()
    server = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            with FaceSearch(url, retries=0) as fs:
                fs.ready()
            return server, url, time.perf_counter() - t
        except (Unreachable, Unavailable):
            time.sleep(0.5)
    raise SystemExit("the server was not ready")


def one_size(work: Path, n: int, kind: str, people: list[str], strangers: list[list[str]],
             delete_album: bool) -> dict[str, Any]:
    folder = work / f"n{n}"
    for stale in (folder, work / f"n{n}-empty"):  # what a run stopped before its end left
        shutil.rmtree(stale, ignore_errors=True)
    row: dict[str, Any] = {"photo_faces": n, "kind": kind, "bulk_s": round(bulk(folder, n, kind), 1)}
    server, url, ready = serve(folder, kind)
    row["ready_s"] = round(ready, 1)
    # beside it, a service on an empty gallery, measured in the same minutes (alternated): the machine's speed
    # drifts by a fifth from one quarter of an hour to the next, so a ratio needs both sides in one window
    empty = serve(work / f"n{n}-empty", kind)[:2] if n else None
    sides = {"": FaceSearch(url, retries=0)}  # the client library, its connections kept alive (as an app's)
    if empty is not None:
        sides["empty_"] = FaceSearch(empty[1], retries=0)
    try:
        for fs in sides.values():
            for name in people:
                fs.enroll(name, LFW / name / f"{name}_0001.jpg", face="largest")
        probes = [(LFW / name / f"{name}_0002.jpg").read_bytes() for name in people]

        def search(fs: FaceSearch, data: bytes) -> float:
            t = time.perf_counter()
            body = fs.search(data)
            assert body.faces and body.faces[0].candidates, body
            return time.perf_counter() - t

        for fs in sides.values():
            for p in probes[:10]:
                search(fs, p)
        lat: dict[str, list[float]] = {side: [] for side in sides}
        for p in probes:
            for side, fs in sides.items():
                lat[side].append(search(fs, p))
        for side, times in lat.items():
            row[f"{side}search_p50_ms"] = round(statistics.median(times) * 1000, 1)
            row[f"{side}search_p99_ms"] = round(sorted(times)[int(0.99 * (len(times) - 1))] * 1000, 1)
        groups = [group_photo([LFW / who / f"{who}_0001.jpg" for who in trio]) for trio in strangers]

        def index(fs: FaceSearch, photos: list[bytes]) -> tuple[int, float]:
            t = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                faces = sum(pool.map(lambda data: len(fs.index_photo(data).faces), photos))
            return faces, time.perf_counter() - t

        half = len(groups) // 2
        if "empty_" in sides:  # the empty side's photos in two halves, before and after this size's
            before = index(sides["empty_"], groups[:half])
        faces, took = index(sides[""], groups)
        row["index_photos_per_s_c8"] = round(len(groups) / took, 2)
        row["index_faces_per_s_c8"] = round(faces / took, 2)
        row["indexed_photos"], row["indexed_faces"] = len(groups), faces
        if "empty_" in sides:
            after = index(sides["empty_"], groups[half:])
            row["empty_index_photos_per_s_c8"] = round(len(groups) / (before[1] + after[1]), 2)
            assert before[0] + after[0] == faces, (before, after, faces)
        if delete_album:
            answered: list[float] = []
            stop = threading.Event()

            def keep_searching() -> None:
                while not stop.is_set():
                    answered.append(search(sides[""], probes[len(answered) % len(probes)]))

            searcher = threading.Thread(target=keep_searching)
            searcher.start()
            time.sleep(1.0)
            before_delete = len(answered)
            t = time.perf_counter()
            deleted = sides[""].delete_album("a0")
            row["delete_album_s"] = round(time.perf_counter() - t, 2)
            during = answered[before_delete:]
            stop.set()
            searcher.join()
            assert deleted.faces_deleted == min(PER_ALBUM, n), deleted
            row["delete_album_faces"] = deleted.faces_deleted
            row["searches_answered_during_delete"] = len(during)
            row["slowest_search_during_delete_ms"] = round(max(during, default=0.0) * 1000, 1)
    finally:
        for fs in sides.values():
            fs.close()
        for proc in (server, *([empty[0]] if empty else [])):
            proc.terminate()
            proc.wait(120)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(work / f"n{n}-empty", ignore_errors=True)
    if empty is not None:
        row["search_p50_vs_empty"] = round(row["search_p50_ms"] / row["empty_search_p50_ms"], 3)
        row["index_rate_vs_empty"] = round(row["index_photos_per_s_c8"] / row["empty_index_photos_per_s_c8"], 3)
    return row


def library_lfw_folds(work: Path) -> dict[str, Any]:
    from bench.photos import lfw_set

    files, _ = lfw_set(LFW.parent)
    tree = work / "lfw-folds-1-2"
    for f in files:
        (tree / f.parent.name).mkdir(parents=True, exist_ok=True)
        link = tree / f.parent.name / f.name
        if not link.exists():
            os.symlink(f, link)
    data = work / "library-data"
    shutil.rmtree(data, ignore_errors=True)  # an empty library: a run before would have every photo skipped
    exe = str(Path(sys.executable).parent / "facesearch")
    done = subprocess.run([exe, "photos", "index", str(tree), "--data-dir", str(data)],
                          capture_output=True, text=True, check=True)
    return {"set": "lfw folds 1-2", **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="0,100000,1000000", help="photo faces in the gallery, comma-separated")
    p.add_argument("--kind", default="exact", choices=["exact", "hnsw"])
    p.add_argument("--work", type=Path, help="where the galleries are built (default: a temporary folder)")
    p.add_argument("--library-lfw-folds", action="store_true", help="time `facesearch photos index` on LFW")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    ran = machine()  # the commit as the run starts
    if a.library_lfw_folds:
        work = a.work or Path(tempfile.mkdtemp(prefix="fs-library-"))
        out = {"command": command(), **ran, **library_lfw_folds(work)}
        print(json.dumps(out, indent=1))
        if a.json:
            a.json.write_text(json.dumps(out, indent=1) + "\n")
        return
    sizes = [int(s) for s in a.sizes.split(",")]
    names = sorted(d.name for d in LFW.iterdir() if d.is_dir() and (d / f"{d.name}_0002.jpg").exists())
    people = names[:ENROLLED]
    rest = sorted(d.name for d in LFW.iterdir() if d.is_dir() and d.name not in set(people))
    order = np.random.default_rng(0).permutation(len(rest))[: 3 * GROUPS]
    strangers = [[rest[i] for i in order[k : k + 3]] for k in range(0, 3 * GROUPS, 3)]
    work = a.work or Path(tempfile.mkdtemp(prefix="fs-photos-scale-"))
    rows = []
    for n in sizes:
        rows.append(one_size(work, n, a.kind, people, strangers, delete_album=n == max(sizes) and n >= PER_ALBUM))
        print(json.dumps(rows[-1]), flush=True)
    out = {"command": command(), **ran, "bulk": "synthetic random unit vectors (not faces)", "rows": rows}
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
