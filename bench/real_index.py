"""Index quality on real face embeddings: HNSW (FAISS) and Milvus Lite against exact search, as decisions.

    python bench/real_index.py [--checkpoint runs/mnv2-4x/last.pt] [--json PATH]

Every photo of LFW and celeba-more whose chip ``facesearch align`` cut into cache/aligned/<chip>/<tree>/ is embedded
once with the checkpoint (cached in cache/embeddings/<model version>.npz; the checkpoint must cut that chip).
Identities: LFW folder names, CelebA identity numbers (img_align_celeba and celeba_crops share them).
Gallery: every photo but these: one photo each of 2,000 people with two or more photos (probes: their other
photos stay enrolled), every photo of 2,000 other people (strangers: one photo each searched), every photo of
1,000 further people (the threshold: distance at which 1% of them would match under exact search, as the
service derives its threshold from FACESEARCH_SEARCH_FPIR). Reported, as bench/gallery.py does on synthetic
vectors: for probes, the share whose top identity and match/unknown decision equal exact search's; for strangers,
the share whose decision does; one-query p50. HNSW with the service's parameters over an efSearch sweep, and
Milvus Lite (which serves every index type as FLAT: its figures show the adapter, not Milvus's HNSW).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402
from gallery import decision_agreement, stranger_threshold  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from index.vectors import GRAPHS, VectorIndex  # noqa: E402

HNSW_EF_SEARCH = GRAPHS["people"].ef_search  # the identity search's graph

TREES = ("lfw-deepfunneled", "img_align_celeba", "celeba_crops")


def embed_all(checkpoint: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(embeddings float32 (N, D), identity labels (N,), model version), cached after the first run."""
    from model.embedder import load_encoder
    from model.train.align import read_index
    from model.train.data import chip_key

    embedder, card = load_encoder(checkpoint)
    version = card["model_version"]
    out = cache / "embeddings" / f"{version}.npz"
    if out.exists():
        z = np.load(out)
        return z["embeddings"], z["labels"], version
    chips = cache / "aligned" / chip_key(embedder.config)
    paths, labels = [], []
    for tree in TREES:
        folder = chips / tree
        status = read_index(folder)
        for rel, state in sorted(status.items()):
            if state != "detected":  # a photo whose face the detector missed: not a gallery face
                continue
            person = rel.split("/")[0]
            paths.append(folder / rel)
            labels.append(("lfw:" if tree.startswith("lfw") else "celeba:") + person)
    if not paths:
        raise SystemExit(f"no chips under {chips}: run `facesearch align` for the trees first")
    vecs = []
    for i in tqdm(range(0, len(paths), 256), desc="embed chips"):
        batch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[i : i + 256]])
        vecs.append(embedder(batch))
    emb = np.concatenate(vecs)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, embeddings=emb, labels=np.array(labels))
    return emb, np.array(labels), version


def split(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Row indices of the gallery, probes, strangers and threshold strangers."""
    people, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = rng.permutation(len(people))
    several = [p for p in order if counts[p] >= 2]
    probe_people = several[:2000]
    taken = set(probe_people)
    rest = [p for p in order if p not in taken]
    stranger_people, threshold_people = rest[:2000], rest[2000:3000]
    out_people = set(stranger_people) | set(threshold_people)
    person_of = np.searchsorted(people, labels)
    probe_rows = first[probe_people]
    strangers = first[stranger_people]
    threshold = np.flatnonzero(np.isin(person_of, list(threshold_people)))
    gallery = np.flatnonzero(~np.isin(person_of, list(out_people)))
    gallery = np.setdiff1d(gallery, probe_rows)
    return {"gallery": gallery, "probes": probe_rows, "strangers": strangers, "threshold": threshold}


def p50_ms(search: Any, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        search(q[None, :], 10)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "mnv2-4x" / "last.pt")
    p.add_argument("--cache", type=Path, default=ROOT / "cache")
    p.add_argument("--no-milvus", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    emb, labels, version = embed_all(a.checkpoint, a.cache)
    rows = split(labels, np.random.default_rng(0))
    g = rows["gallery"]
    ids = np.arange(1, len(g) + 1, dtype=np.int64)
    people, person_of = np.unique(labels, return_inverse=True)
    owner = np.concatenate([[-1], person_of[g]])
    probes, strangers = emb[rows["probes"]], emb[rows["strangers"]]
    out: dict[str, Any] = {"model_version": version, "photos": len(emb), "people": len(people),
                           "gallery_faces": len(g), "probes": len(probes), "strangers": len(strangers)}
    exact = VectorIndex(emb.shape[1], "exact")
    exact.add(ids, emb[g])
    threshold = stranger_threshold(exact.search, emb[rows["threshold"]])
    out["threshold"] = threshold
    _, top = exact.search(probes, 1)
    out["exact_rank1"] = float(np.mean(owner[top[:, 0]] == person_of[rows["probes"]]))
    out["exact_p50_ms"] = p50_ms(exact.search, probes[:200])
    t = time.perf_counter()
    hnsw = VectorIndex(emb.shape[1], "hnsw")
    hnsw.add(ids, emb[g])
    out["hnsw_build_s"] = time.perf_counter() - t
    for ef in (16, 32, 64, 128, HNSW_EF_SEARCH):
        dp, ds = decision_agreement(lambda x, k, ef=ef: hnsw.search(x, k, ef_search=ef), exact.search, probes,
                                    strangers, owner, threshold)
        out[f"hnsw_ef{ef}_decision_agreement_probes"], out[f"hnsw_ef{ef}_decision_agreement_strangers"] = dp, ds
        out[f"hnsw_ef{ef}_p50_ms"] = p50_ms(lambda x, k, ef=ef: hnsw.search(x, k, ef_search=ef), probes[:200])
    out["hnsw_ef_search"] = HNSW_EF_SEARCH
    for key in ("decision_agreement_probes", "decision_agreement_strangers", "p50_ms"):
        out[f"hnsw_{key}"] = out[f"hnsw_ef{HNSW_EF_SEARCH}_{key}"]
    if not a.no_milvus:
        from index.milvus import MilvusIndex

        with tempfile.TemporaryDirectory() as tmp:
            milvus = MilvusIndex(str(Path(tmp) / "milvus.db"), emb.shape[1], version)
            t = time.perf_counter()
            for i in range(0, len(g), 1000):
                milvus.add(ids[i : i + 1000], emb[g[i : i + 1000]])
            milvus.flush()
            out["milvus_insert_per_s"] = len(g) / (time.perf_counter() - t)
            milvus.search(probes[:1], 10)
            dp, ds = decision_agreement(milvus.search, exact.search, probes, strangers, owner, threshold)
            out["milvus_decision_agreement_probes"], out["milvus_decision_agreement_strangers"] = dp, ds
            out["milvus_p50_ms"] = p50_ms(milvus.search, probes[:200])
            milvus.close()
    out["exact_p50_ms_again"] = p50_ms(exact.search, probes[:200])  # interleaved in time with the others
    report(out, a.json, digits=4)


if __name__ == "__main__":
    main()
