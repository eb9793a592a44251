"""The ``photos`` space's HNSW graph beside the ``people`` space's: what inserting a photo face and its cluster
join's search cost, and whether they decide as exact search does, for real faces among many others.

    python bench/photos_graph.py [--bulk 100000] [--json PATH]

Faces: the face nearest the centre of every photo of LFW folds 1-2's people, through the serving pipeline (cached
under cache/photos-graph/), among ``--bulk`` synthetic random unit vectors (not faces). Each space's graph
(``index.vectors.GRAPHS``) gets the bulk at once, then the real faces one at a time, as the service inserts a photo's
faces (on one thread): insertion ms per face. Then each real face is looked up as the cluster join looks (its
``JOIN_K`` nearest other faces, re-scored exactly; one thread): ms per face; the join's decision (its nearest other
face within the cluster threshold, or none) equal to exact search's; and of the faces within the photo search's
threshold at this size (FPIR 1%) among its 64 nearest by exact search, the share the graph finds (a photo search's
recall). The same vectors and order for both graphs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import command, machine  # noqa: E402
from index.photos import JOIN_K  # noqa: E402
from index.spaces import SPACES  # noqa: E402
from index.vectors import GRAPHS, VectorIndex  # noqa: E402

LFW = ROOT.parent / "shared" / "datasets" / "lfw"
CACHE = ROOT / "cache" / "photos-graph"
WIDE = 64  # a photo search's first fetch (index.photos.Photos._within)


def lfw_faces() -> np.ndarray:
    """float32 (n, D): the subject (the face nearest the centre) of each photo of LFW folds 1-2's people that has a
    face, embedded as the service embeds it."""
    out = CACHE / "lfw-folds-1-2.npy"
    if not out.exists():
        from bench.photos import lfw_set
        from model.pipeline import FacePipeline
        from model.train.served import subjects

        files, _ = lfw_set(LFW)
        faces = subjects(FacePipeline(runtime="onnx"), LFW, [str(f.relative_to(LFW)) for f in files])
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(out, np.asarray([e for e in faces.values() if e is not None], np.float32))
    return np.load(out)


def nearest_others(search: Any, q: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest faces other than itself (it is in the index)."""
    sims, ids = search(q, k + 1)
    keep = ids != own[:, None]
    sims = np.stack([s[m][:k] for s, m in zip(sims, keep, strict=True)])
    ids = np.stack([i[m][:k] for i, m in zip(ids, keep, strict=True)])
    return sims, ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bulk", type=int, default=100_000, help="synthetic random unit vectors beside the real faces")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    ran = machine()
    from facesearch.photos import cluster_threshold
    from model.calibration import Calibration

    card = json.loads((ROOT / "model" / "weights" / "model_card.json").read_text())
    cal = Calibration(card)
    real = lfw_faces()
    dim = real.shape[1]
    rng = np.random.default_rng(0)
    bulk = rng.standard_normal((a.bulk, dim)).astype(np.float32)
    bulk /= np.linalg.norm(bulk, axis=1, keepdims=True)
    bulk_ids = np.arange(1, a.bulk + 1, dtype=np.int64)
    real_ids = np.arange(a.bulk + 1, a.bulk + 1 + len(real), dtype=np.int64)
    join_d = cluster_threshold(cal)
    search_d = cal.search_threshold(0.01, a.bulk + len(real))[0]
    join_s, search_s = 1 - join_d**2 / 2, 1 - search_d**2 / 2

    exact = VectorIndex(dim, "exact")
    exact.add(bulk_ids, bulk)
    exact.add(real_ids, real)
    es, ei = nearest_others(exact.search, real, real_ids, WIDE)
    exact_join = np.where(es[:, 0] >= join_s, ei[:, 0], -1)
    exact_within = [set(i[s >= search_s].tolist()) for s, i in zip(es, ei, strict=True)]
    out: dict[str, Any] = {
        "command": command(), **ran, "bulk": f"{a.bulk} synthetic random unit vectors (not faces)",
        "real_faces": len(real), "join_threshold": join_d, "photo_search_threshold": search_d,
        "exact_joins": int((exact_join >= 0).sum()), "exact_within_pairs": sum(map(len, exact_within)),
    }
    for space in SPACES:
        g = GRAPHS[space]
        index = VectorIndex(dim, "hnsw", space)
        t = time.perf_counter()
        index.add(bulk_ids, bulk)
        built = time.perf_counter() - t
        t = time.perf_counter()
        for n in range(len(real)):
            index.add(real_ids[n : n + 1], real[n : n + 1])
        insert = (time.perf_counter() - t) / len(real)
        t = time.perf_counter()
        for n in range(len(real)):
            index.search(real[n : n + 1], JOIN_K + 1)
        join_t = (time.perf_counter() - t) / len(real)
        hs, hi = nearest_others(index.search, real, real_ids, JOIN_K)
        join = np.where(hs[:, 0] >= join_s, hi[:, 0], -1)
        ws, wi = nearest_others(index.search, real, real_ids, WIDE)
        found = [set(i[s >= search_s].tolist()) for s, i in zip(ws, wi, strict=True)]
        recall = sum(len(f & e) for f, e in zip(found, exact_within, strict=True)) / max(1, out["exact_within_pairs"])
        out[space] = {
            "m": g.m, "ef_construction": g.ef_construction, "ef_search": g.ef_search,
            "bulk_build_s": round(built, 1), "insert_ms_per_face": round(insert * 1e3, 3),
            "join_search_ms_per_face": round(join_t * 1e3, 3),
            "join_decisions_equal_exact": round(float((join == exact_join).mean()), 4),
            "photo_search_recall": round(recall, 4),
        }
        print(json.dumps({space: out[space]}), flush=True)
    out["insert_ratio_photos_vs_people"] = round(out["photos"]["insert_ms_per_face"]
                                                 / out["people"]["insert_ms_per_face"], 3)
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
