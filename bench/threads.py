"""Threads inside each network call against request threads, for the service's mix: bench/api.py's /v1/search p50
and photos/s with 8 clients for each pair of FACESEARCH_TORCH_THREADS x FACESEARCH_WORKERS, on one enrolled
gallery, the pairs alternated round after round so that they share the machine's load.

    python bench/threads.py [--pairs 1x4,2x4,1x2,2x2,1x8] [--rounds 2] [--people 300] [--json PATH]

Prints each pair's median over its rounds (the service's default on this machine is marked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facesearch.settings import Settings  # noqa: E402

HERE = Path(__file__).resolve().parent
FIGURES = ["search_p50_ms", "search_p99_ms", "photos_per_s_c8", "ready_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", default="1x4,2x4,1x2,2x2,1x8", help="THREADSxWORKERS, comma-separated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--people", type=int, default=300)
    p.add_argument("--probes", type=int, default=200)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    pairs = [tuple(int(x) for x in pair.split("x")) for pair in a.pairs.split(",")]
    default = Settings()
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="fs-threads-") as work:
        for r in range(a.rounds):
            for threads, workers in pairs if r % 2 == 0 else pairs[::-1]:
                key = f"{threads}x{workers}"
                env = {**os.environ, "FACESEARCH_TORCH_THREADS": str(threads), "FACESEARCH_WORKERS": str(workers)}
                with tempfile.NamedTemporaryFile(suffix=".json") as out:
                    subprocess.run([sys.executable, str(HERE / "api.py"), "--no-dlib", "--data-dir", work,
                                    "--people", str(a.people), "--probes", str(a.probes), "--json", out.name],
                                   env=env, check=True, stdout=subprocess.DEVNULL)
                    runs.setdefault(key, []).append(json.loads(Path(out.name).read_text()))
                print(f"round {r + 1} {key}: " + ", ".join(f"{f} {runs[key][-1][f]:.1f}" for f in FIGURES), flush=True)
    table = {key: {f: statistics.median(run[f] for run in got) for f in FIGURES} for key, got in runs.items()}
    mark = f"{default.torch_threads}x{default.workers}"
    print(f"{'threads x workers':18s} " + " ".join(f"{f:>16s}" for f in FIGURES))
    for key, row in table.items():
        print(f"{key + (' (default)' if key == mark else ''):18s} " + " ".join(f"{row[f]:16.1f}" for f in FIGURES))
    if a.json:
        a.json.write_text(json.dumps({"default": mark, "rounds": a.rounds, "people": a.people, "medians": table,
                                      "runs": runs, "machine": next(iter(runs.values()))[0].get("cpu")}, indent=2))


if __name__ == "__main__":
    main()
