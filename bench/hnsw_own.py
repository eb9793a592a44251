"""Does HNSW, with the gallery's settings, find a probe's own enrolled photos among 1M faces?

    python bench/hnsw_own.py

The same synthetic data as bench/gallery.py's 1M gallery (``data(1_000_000)``: 1M faces of 200,000
people, about five photos each, the same seeded vectors), faiss directly. Prints recall@10 against exact
search (the issue's figure), and what a face service needs: the share of the probe's own photos in the
exact top 10 that HNSW also returns, and how often its first answer is one of the probe's own photos.
p50 is one query at a time.
"""

import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from gallery import data, photos, recall  # noqa: E402

from index.vectors import HNSW_EF_CONSTRUCTION, HNSW_M  # noqa: E402


def main() -> None:
    faiss.omp_set_num_threads(2)
    print(machine(), flush=True)
    v, who, centres = data(1_000_000)
    flat = faiss.IndexFlatIP(128)
    flat.add(v)
    t = time.time()
    h = faiss.IndexHNSWFlat(128, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    h.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    h.add(v)
    print(f"HNSW M={HNSW_M}, efConstruction={HNSW_EF_CONSTRUCTION}: built in {time.time() - t:.0f} s", flush=True)
    q = np.random.default_rng(1)
    pid = q.integers(0, len(centres), 1000)
    probes = photos(q, centres[pid])
    _, truth = flat.search(probes, 10)
    own_total = np.array([(who == p).sum() for p in pid])
    own_in_truth = np.array([(who[t] == p).sum() for t, p in zip(truth, pid, strict=True)])
    share = own_in_truth.sum() / own_total.sum()
    print(f"own photos per probe {own_total.mean():.2f}; in the exact top 10: {share:.4f}")
    for ef in (64, 96, 192):
        h.hnsw.efSearch = ef
        lat = []
        for x in probes[:300]:
            s = time.perf_counter()
            h.search(x[None], 10)
            lat.append(time.perf_counter() - s)
        _, got = h.search(probes, 10)
        own_found = np.array([(who[g[g >= 0]] == p).sum() for g, p in zip(got, pid, strict=True)])
        r10 = recall(got, truth)
        top1 = np.mean(who[got[:, 0]] == pid)
        print(f"efSearch {ef}: p50 {np.median(lat) * 1000:.2f} ms, recall@10 {r10:.3f}, "
              f"own photos found {own_found.sum() / own_in_truth.sum():.4f}, first answer own {top1:.4f}", flush=True)


if __name__ == "__main__":
    main()
