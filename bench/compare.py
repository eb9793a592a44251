"""Before and after a change, side by side in one run: bench/gallery.py --quick and bench/api.py at a recorded
commit (checked out in a temporary git worktree) and at the working tree, alternated, so both sides share the
machine's load. Both sides are measured by the same bench code, the working tree's (copied over the recorded
commit's bench/), each with its own product code.

    python bench/compare.py REV [--rounds 2] [--people 300] [--probes 200] [--encoder] [--json PATH]

For each figure: the median of each side's rounds and after/before. Gallery figures (synthetic vectors, no model):
bulk add rate, exact search p50 through the gallery, single add and delete latency, start-up from the snapshot;
API figures (the server in its own process, LFW photos): /v1/search p50 and photos/s with 8 clients; with
``--encoder``, bench/encoder.py's figures too (MTCNN per photo, photo to embedding, faces/s as served, and dlib's
in each side's run). ``--photo-scale SIZES [--kind hnsw]``: bench/photos_scale.py instead (indexing group photos and
/v1/search with that many synthetic photo faces in the gallery).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ["bulk_add_per_s", "gallery_search_p50_ms_100k", "gallery_search_p50_ms_1m", "single_add_p50_ms",
           "single_delete_p50_ms_100k", "single_delete_p50_ms_1m", "startup_1m_s"]
API = ["search_p50_ms", "search_p99_ms", "photos_per_s_c8", "ready_s"]
PHOTO_SCALE = ["index_photos_per_s_c8", "search_p50_ms"]
ENCODER = ["mtcnn_ms_per_photo", "ours_photo_to_embedding_ms", "dlib_photo_to_embedding_ms", "path_ratio",
           "ours_shipped_faces_per_s_b32", "descriptor_ratio_b32_as_shipped"]


def run(side: Path, script: str, args: list[str]) -> dict[str, float]:
    """One bench script of one side (its own code first on the import path), as its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(side)}
        done = subprocess.run([sys.executable, str(side / "bench" / script), *args, "--json", out.name], cwd=side,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"{side / 'bench' / script} failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(Path(out.name).read_text()))


def photo_scale(out: dict) -> dict[str, float]:  # type: ignore[type-arg]
    """bench/photos_scale.py's rows as figures named by size (``index_photos_per_s_c8_100000``)."""
    return {f"{figure}_{row['photo_faces']}": row[figure] for row in out["rows"] for figure in PHOTO_SCALE}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev", help="the commit to compare against (before)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--people", type=int, default=300, help="LFW people enrolled for bench/api.py")
    p.add_argument("--probes", type=int, default=200)
    p.add_argument("--gallery-only", action="store_true", help="bench/gallery.py only (no model, a few minutes)")
    p.add_argument("--api-only", action="store_true", help="bench/api.py only (a change of encoder, not of gallery)")
    p.add_argument("--encoder", action="store_true", help="also bench/encoder.py (a few minutes a side)")
    p.add_argument("--photo-scale", metavar="SIZES", help="instead: bench/photos_scale.py at these photo-face counts "
                   "(e.g. 100000,1000000): indexing photos/s with 8 clients and /v1/search p50 at each")
    p.add_argument("--kind", default="exact", choices=["exact", "hnsw"], help="--photo-scale's index kind")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", a.rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    after = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip())
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="fs-before-") as tmp:
        before = Path(tmp) / "tree"
        (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")  # the datasets beside the repository, as here
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), commit], cwd=ROOT, check=True)
        shutil.copytree(ROOT / "bench", before / "bench", dirs_exist_ok=True)  # one measuring code for both sides
        try:
            for r in range(a.rounds):
                for name, side in (("before", before), ("after", ROOT)) if r % 2 == 0 else \
                        (("after", ROOT), ("before", before)):
                    if a.photo_scale:
                        runs[name].append(photo_scale(run(side, "photos_scale.py", [
                            "--sizes", a.photo_scale, "--kind", a.kind])))
                        print(f"round {r + 1} {name} done", file=sys.stderr)
                        continue
                    fig = {} if a.api_only else run(side, "gallery.py", ["--quick"])
                    if not a.gallery_only:
                        fig.update(run(side, "api.py", ["--no-dlib", "--people", str(a.people),
                                                       "--probes", str(a.probes)]))
                    if a.encoder:
                        fig.update(run(side, "encoder.py", []))
                    runs[name].append(fig)
                    print(f"round {r + 1} {name} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    table = {}
    keys = ([] if a.api_only else GALLERY) + ([] if a.gallery_only else API) + (ENCODER if a.encoder else [])
    if a.photo_scale:
        keys = [f"{figure}_{n}" for n in a.photo_scale.split(",") for figure in PHOTO_SCALE]
    for key in keys:
        if not all(key in f for side in runs.values() for f in side):
            print(f"{key:30s} (not measured by both sides' benches)")
            continue
        b = statistics.median(f[key] for f in runs["before"])
        x = statistics.median(f[key] for f in runs["after"])
        table[key] = {"before": b, "after": x, "after_over_before": x / b}
        print(f"{key:30s} {b:12.3f} {x:12.3f} {x / b:8.3f}")
    result = {"before_commit": commit, "after_commit": after, "after_has_uncommitted_changes": dirty,
              "rounds": a.rounds, "command": "python bench/compare.py " + " ".join(sys.argv[1:]), "figures": table,
              "runs": runs}
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
