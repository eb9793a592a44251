"""Grouping unnamed faces into people: a k-nearest-neighbour graph of the faces (FAISS), its edges kept where
two faces are closer than a strict distance, then the graph's clusters.

Two ways to read clusters from the graph (``bench/photos.py`` measures both beside dlib's recipe):
``components`` (connected components: one chain of close pairs joins two groups) and ``whispers`` (Chinese
whispers, Biemann 2006, what dlib and face_recognition's users run: each face takes the label that weighs most
among its neighbours, repeated; a single bridge between two dense groups does not merge them).
"""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Method = Literal["components", "whispers"]
EXACT_UP_TO = 200_000  # above this many faces the k-NN graph comes from an HNSW graph instead of exact search


def knn_graph(vectors: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges (i, j, distance) between each face and its ``k`` nearest others closer than ``threshold``
    (Euclidean distance of unit vectors), each pair once."""
    n, dim = vectors.shape
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index: faiss.Index
    if n <= EXACT_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 2 * k)
    index.add(x)
    kk = min(n, k + 1)
    sims, nbrs = index.search(x, kk)
    dist = np.sqrt(np.clip(2.0 - 2.0 * sims, 0.0, 4.0))
    rows = np.repeat(np.arange(n), kk)
    cols, d = nbrs.ravel(), dist.ravel()
    keep = (cols >= 0) & (cols != rows) & (d <= threshold)
    i, j, d = rows[keep], cols[keep], d[keep]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    _, first = np.unique(lo * n + hi, return_index=True)
    return lo[first].astype(np.int64), hi[first].astype(np.int64), d[first].astype(np.float32)


def cluster(vectors: np.ndarray, threshold: float, *, method: Method = "whispers", k: int = 20,
            iterations: int = 20, seed: int = 0) -> np.ndarray:
    """A cluster label per face (int64 (n,), labels 0..m-1 numbered by first appearance)."""
    n = len(vectors)
    i, j, d = knn_graph(vectors, k, threshold)
    if method == "components":
        graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
    else:
        labels = _whispers(n, i, j, 1.0 - d * d / 2.0, iterations, seed)
    return _renumber(labels)


def _whispers(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, iterations: int, seed: int) -> np.ndarray:
    """Chinese whispers: every node starts alone, then, in a random order each round, takes the label with the
    largest summed edge weight among its neighbours; stops when a round changes nothing."""
    labels = np.arange(n)
    if not len(i):
        return labels
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    wt = np.concatenate([w, w]).astype(np.float64)
    order = np.argsort(src, kind="stable")
    src, dst, wt = src[order], dst[order], wt[order]
    starts = np.searchsorted(src, np.arange(n + 1))
    rng = np.random.default_rng(seed)
    nodes = np.unique(src)
    for _ in range(iterations):
        changed = 0
        for v in rng.permutation(nodes):
            a, b = starts[v], starts[v + 1]
            nl = labels[dst[a:b]]
            uniq, inv = np.unique(nl, return_inverse=True)
            score = np.bincount(inv, weights=wt[a:b])
            best = uniq[int(np.argmax(score))]
            if best != labels[v]:
                labels[v] = best
                changed += 1
        if not changed:
            break
    return labels


def _renumber(labels: np.ndarray) -> np.ndarray:
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv]
