"""HNSW graph parameters against decision agreement at 1M: bench/gallery.py's vectors, probes and threshold.

    python bench/hnsw_params.py M EF_CONSTRUCTION

Builds one HNSW graph with M and efConstruction over the 1M gallery of bench/gallery.py (``data(1_000_000)``, the
same seed) as the service builds it (float16 copies walked, the k found re-scored in float32) and sweeps efSearch,
printing the one-query p50 and the decision agreement with exact search as bench/gallery.py measures it (its
probes, strangers and threshold, drawn in the same order). The service's graph is M=48, efConstruction=160
(index/vectors.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gallery import data, decision_agreement, latency, people, photos, stranger_threshold  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import index.vectors as vectors  # noqa: E402


def main() -> None:
    m, efc = int(sys.argv[1]), int(sys.argv[2])
    faiss.omp_set_num_threads(2)
    n = 1_000_000
    v, who, centres = data(n)
    ids = np.arange(1, n + 1, dtype=np.int64)
    exact = vectors.VectorIndex(128, "exact")
    exact.add(ids, v)
    was = vectors.GRAPHS["people"]  # read when the index is made
    vectors.GRAPHS["people"] = vectors.Graph(m, efc, was.ef_search, was.layout)
    t = time.time()
    h = vectors.VectorIndex(128, "hnsw")
    h.add(ids, v)
    print(f"M {m} efConstruction {efc}: build {time.time() - t:.0f} s", flush=True)
    qrng = np.random.default_rng(7)  # the draws of bench/gallery.py, in its order
    probes = photos(qrng, centres[qrng.integers(0, len(centres), 200)])
    photos(qrng, people(qrng, 200))  # its recall strangers, not used here
    owner = np.concatenate([[-1], who])
    threshold = stranger_threshold(exact.search, photos(qrng, people(qrng, 1000)))
    more_probes = photos(qrng, centres[qrng.integers(0, len(centres), 2000)])
    more_strangers = photos(qrng, people(qrng, 2000))
    for ef in (48, 64, 96, 128, 192):
        p50, _ = latency(lambda x, ef=ef: h.search(x, 10, ef_search=ef), probes)
        dp, ds = decision_agreement(lambda x, k, ef=ef: h.search(x, k, ef_search=ef), exact.search, more_probes,
                                    more_strangers, owner, threshold)
        print(f"efSearch {ef}: p50 {p50:.3f} ms, decisions equal to exact: probes {dp:.4f}, strangers {ds:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
