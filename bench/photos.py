"""Grouping unlabelled faces into people, on people we kept out of training, beside dlib's recipe; and the
clustering time at scale.

    python bench/photos.py --lfw ../shared/datasets/lfw --celeba DIR/img_align_celeba [--json PATH]
    python bench/photos.py --find --lfw ../shared/datasets/lfw --celeba DIR/img_align_celeba [--cfp CFP] [--json PATH]
    python bench/photos.py --scale 100000,1000000 [--json PATH]

Sets: every photo of the people in LFW's folds 1-2 (our held-out test folds), and every photo of the CelebA
identities in bench/celeba_heldout.txt (kept out of training) that are neither the open-set table's calibration
strangers (bench/celeba_calibration.txt) nor someone the encoder trained on under another name
(bench/celeba_heldout_trained.txt). Each photo's face nearest the
centre (LFW's convention), through the serving pipeline (MTCNN, chip, shipped encoder) and through dlib's
(HOG, 5-point chip, ResNet); a photo where a pipeline finds no face is left out of both, so both cluster the
same faces. Ours: as photos arrive (each face joins its nearest unnamed face's cluster within the threshold), and
rebuilt by ``index.clusters.cluster`` (k-NN graph, Chinese whispers or connected components) at the
distance where the model card's impostor FAR is 1e-4 (fixed before measuring, not tuned here). dlib:
``dlib.chinese_whispers_clustering`` on its descriptors at its documented 0.5 (face_recognition's recipe).
Reported: BCubed precision, recall, F1 (Bagga and Baldwin 1998; Amigo et al. 2009) and clusters vs people.
Embeddings are cached under cache/photos-bench/.

``--find``: find my photos, end to end through the HTTP API. Each person of the set with at least two photos keeps
their last photo as the selfie; every other photo goes into a group photo of three people side by side (shuffled,
seeded), indexed with ``POST /v1/photos``. Each selfie is searched with ``POST /v1/photos/search`` (default
threshold: FPIR 0.01 for the photo faces indexed), with ``expand``: the direct hits (the default answer) and,
beside them, with the photos two direct matches vouch for. ``--cfp``:
CFP's people 401-500, whose 4 profiles and 9 frontals are indexed, a frontal the selfie (most of them are also in LFW
or CelebA under other names: bench/results/overlap.json). Reported: indexing rate
(photos and faces per second), precision (returned photos that hold the person; a background face in an LFW photo
may be someone else named in the set, which counts against us) and the share of the person's photos found.

``--scale``: synthetic clustered unit vectors (128-d, 10 per person, noise like same-person faces), clustering time
and BCubed F1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import LOCAL, celeba_people, command, group_photo, machine  # noqa: E402
from index.clusters import cluster  # noqa: E402

CELEBA_SET = "celeba held-out, never trained on"
CACHE = ROOT / "cache" / "photos-bench"


def bcubed(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """BCubed precision/recall/F1 of a clustering against the true people (item-averaged)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    pair = labels.astype(np.int64) * (int(truth.max()) + 1) + truth.astype(np.int64)
    _, pair_inv, pair_n = np.unique(pair, return_inverse=True, return_counts=True)
    _, lab_inv, lab_n = np.unique(labels, return_inverse=True, return_counts=True)
    _, tru_inv, tru_n = np.unique(truth, return_inverse=True, return_counts=True)
    both = pair_n[pair_inv].astype(np.float64)
    p = float(np.mean(both / lab_n[lab_inv]))
    r = float(np.mean(both / tru_n[tru_inv]))
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4)}


def embed_set(name: str, files: list[Path], people: list[str]) -> dict[str, np.ndarray]:
    """Both pipelines' embeddings of each photo's centre face (NaN rows where none was found), cached."""
    out = CACHE / f"{name}.npz"
    if out.exists():
        return dict(np.load(out))
    from tqdm import tqdm

    from model.pipeline import FacePipeline
    from model.train.subject import central_face
    from model.train.teacher import dlib_embedding

    pipe = FacePipeline(runtime="onnx")  # what the service runs
    ours = np.full((len(files), pipe.embedder.dim), np.nan, np.float32)
    theirs = np.full((len(files), 128), np.nan, np.float32)
    for n, f in enumerate(tqdm(files, desc=name)):
        a = pipe.analyze(f.read_bytes(), max_faces=20)
        if a.faces:
            face = central_face([x.face for x in a.faces], a.width, a.height)
            ours[n] = next(x.embedding for x in a.faces if x.face is face)
        emb, found = dlib_embedding(f)  # dlib's pipeline, the face nearest the centre
        if found:
            theirs[n] = emb
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(out, ours=ours, dlib=theirs, people=np.array(people), files=np.array([str(f) for f in files]))
    return dict(np.load(out))


def lfw_set(lfw: Path) -> tuple[list[Path], list[str]]:
    from model.train.lfw import people_in_folds, read_pairs

    people = sorted(people_in_folds(read_pairs(lfw / "pairs.txt"), [1, 2]))
    files, who = [], []
    for p in people:
        for f in sorted((lfw / "lfw-deepfunneled" / p).glob("*.jpg")):
            files.append(f)
            who.append(p)
    return files, who


def celeba_set(celeba: Path) -> tuple[list[Path], list[str]]:
    files, who = [], []
    for p in celeba_people()[0]:
        for f in sorted((celeba / p).glob("*.jpg")):
            files.append(f)
            who.append(p)
    return files, who


def cfp_set(root: Path, splits: tuple[int, ...] = (9, 10)) -> tuple[list[Path], list[str]]:
    """CFP's people of these splits (never trained on by the shipped encoder; splits 1-5 are refused): each
    person's 4 profiles, then 10 frontals (the last one is find-my-photos' selfie)."""
    from model.train.cfp import Cfp

    cfp = Cfp(root)
    files, who = [], []
    for person in cfp.people(list(splits)):
        for pose, count in (("profile", 4), ("frontal", 10)):
            for number in range(1, count + 1):
                files.append(cfp.root / cfp.photo(person, pose, number))
                who.append(f"cfp{person:03d}")
    return files, who


def evaluate(name: str, emb: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    import dlib

    ours, theirs, people = emb["ours"], emb["dlib"], emb["people"]
    keep = ~np.isnan(ours).any(1) & ~np.isnan(theirs).any(1)
    _, truth = np.unique(people[keep], return_inverse=True)
    x = ours[keep]
    row: dict[str, Any] = {"set": name, "photos": int(len(people)), "faces_clustered": int(keep.sum()),
                           "people": int(truth.max() + 1), "threshold": round(threshold, 4)}
    for method in ("whispers", "components"):
        t = time.perf_counter()
        labels = cluster(x, threshold, method=method)
        row[f"ours_{method}"] = {**bcubed(labels, truth), "clusters": int(labels.max() + 1),
                                 "seconds": round(time.perf_counter() - t, 2)}
    t = time.perf_counter()
    labels = incremental(x, threshold)
    row["ours_incremental"] = {**bcubed(labels, truth), "clusters": int(labels.max() + 1),
                               "seconds": round(time.perf_counter() - t, 2)}
    t = time.perf_counter()
    labels = np.array(dlib.chinese_whispers_clustering([dlib.vector(v.astype(float).tolist()) for v in theirs[keep]],
                                                       0.5))
    row["dlib_whispers_0.5"] = {**bcubed(labels, truth), "clusters": int(labels.max() + 1),
                                "seconds": round(time.perf_counter() - t, 2)}
    return row


def find_my_photos(name: str, files: list[Path], people: list[str], seed: int = 0) -> dict[str, Any]:
    import random
    import tempfile

    from fastapi.testclient import TestClient

    from app.main import create_app
    from facesearch.settings import Settings

    by_person: dict[str, list[Path]] = {}
    for f, p in zip(files, people, strict=True):
        by_person.setdefault(p, []).append(f)
    selfies = {p: fs[-1] for p, fs in by_person.items() if len(fs) >= 2}
    pool = [(p, f) for p in selfies for f in by_person[p][:-1]]
    random.Random(seed).shuffle(pool)
    groups = [pool[i : i + 3] for i in range(0, len(pool), 3)]
    holds: dict[str, set[str]] = {p: set() for p in selfies}
    with tempfile.TemporaryDirectory() as d, TestClient(create_app(Settings(data_dir=Path(d))), base_url=LOCAL) as c:
        t0, faces = time.perf_counter(), 0
        for n, grp in enumerate(groups):
            r = c.post("/v1/photos", files={"image": ("g.jpg", group_photo([f for _, f in grp]), "image/jpeg")},
                       data={"photo_id": f"g{n}"})
            assert r.status_code == 201, r.text
            faces += len(r.json()["faces"])
            for p, _ in grp:
                holds[p].add(f"g{n}")
        index_s = time.perf_counter() - t0
        returned = correct = found = wanted = no_face = returned_direct = correct_direct = 0
        t0 = time.perf_counter()
        for p, selfie in selfies.items():
            r = c.post("/v1/photos/search", files={"image": ("s.jpg", selfie.read_bytes(), "image/jpeg")},
                       data={"expand": "true"})  # the direct hits are counted apart (the default answer)
            if r.status_code == 422:
                no_face += 1
                wanted += len(holds[p])
                continue
            hits = r.json()["photos"]
            got = {h["photo_id"] for h in hits}
            direct = {h["photo_id"] for h in hits if not h["expanded"]}
            returned_direct += len(direct)
            correct_direct += len(direct & holds[p])
            returned += len(got)
            correct += len(got & holds[p])
            found += len(got & holds[p])
            wanted += len(holds[p])
        search_s = time.perf_counter() - t0
    return {"set": name, "people": len(selfies), "group_photos": len(groups), "faces_indexed": faces,
            "index_photos_per_s": round(len(groups) / index_s, 2), "index_faces_per_s": round(faces / index_s, 2),
            "precision": round(correct / max(1, returned), 4), "found": round(found / max(1, wanted), 4),
            "direct_only": {"precision": round(correct_direct / max(1, returned_direct), 4),
                            "found": round(correct_direct / max(1, wanted), 4)},
            "selfies_without_face": no_face, "search_ms": round(1000 * search_s / len(selfies), 1)}


def incremental(x: np.ndarray, threshold: float) -> np.ndarray:
    """The clusters faces join as their photos arrive one by one (``POST /v1/photos``), in a real gallery."""
    import tempfile

    from index.gallery import Gallery
    from index.records import NewFace, NewPhoto

    with tempfile.TemporaryDirectory() as d:
        g = Gallery(Path(d), dim=x.shape[1], model_version="bench")
        ids = [g.photos.add(NewPhoto(f"p{n}"), [(None, NewFace(v))], cluster_within=threshold)[0]
               for n, v in enumerate(x)]
        with g.store.read() as c:
            cluster = dict(c.execute("SELECT id, cluster_id FROM faces").fetchall())
        g.close()
    return np.unique([cluster[i] for i in ids], return_inverse=True)[1]


def synthetic(n: int, dim: int = 128, per_person: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in clusters of ``per_person``: a random centre plus noise that puts same-person pairs at
    distances like real genuine pairs (about 0.5-0.8)."""
    rng = np.random.default_rng(seed)
    people = n // per_person
    centres = rng.standard_normal((people, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(people), per_person)
    x = centres[truth] + rng.standard_normal((len(truth), dim)).astype(np.float32) * (0.45 / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw", type=Path)
    p.add_argument("--celeba", type=Path, help="celeba-more's img_align_celeba folder")
    p.add_argument("--cfp", type=Path, help="--find: also CFP's splits 9-10 (a CFP tree, see evaluate-cfp)")
    p.add_argument("--scale", help="comma-separated face counts for the synthetic timing")
    p.add_argument("--find", action="store_true", help="find my photos through the API instead of clustering")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    rows: list[dict[str, Any]] = []
    if a.find:
        for name, (files, people) in ([("lfw folds 1-2", lfw_set(a.lfw))] if a.lfw else []) + \
                ([(CELEBA_SET, celeba_set(a.celeba))] if a.celeba else []) + \
                ([("cfp splits 9-10 (profiles indexed)", cfp_set(a.cfp))] if a.cfp else []):
            rows.append(find_my_photos(name, files, people))
            print(json.dumps(rows[-1]), flush=True)
    elif a.lfw or a.celeba:
        from model.calibration import Calibration
        from model.embedder import load_encoder

        threshold = Calibration(load_encoder(None)[1]).threshold_for_far(1e-4)
        if a.lfw:
            rows.append(evaluate("lfw folds 1-2", embed_set("lfw-folds-1-2", *lfw_set(a.lfw)), threshold))
            print(json.dumps(rows[-1]), flush=True)
        if a.celeba:
            rows.append(evaluate(CELEBA_SET, embed_set("celeba-heldout-untrained", *celeba_set(a.celeba)),
                                 threshold))
            print(json.dumps(rows[-1]), flush=True)
    for n in [int(s) for s in a.scale.split(",")] if a.scale else []:
        x, truth = synthetic(n)
        for method in ("whispers", "components"):
            t = time.perf_counter()
            labels = cluster(x, 0.9, method=method)
            rows.append({"set": f"synthetic {n}", "method": method, "seconds": round(time.perf_counter() - t, 1),
                         **bcubed(labels, truth)})
            print(json.dumps(rows[-1]), flush=True)
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, **machine(), "command": command()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
