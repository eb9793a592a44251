"""Encoder and detector speed on this machine, per core, beside dlib's in the same run, timed the same way.

    python bench/encoder.py [--photos 64] [--threads 1] [--checkpoint PATH] [--before PATH] [--json PATH]

Like for like: dlib's descriptor and pipeline are single-threaded (dlib-bin has no BLAS), so the whole bench is
pinned to ``--threads`` cores (1 by default: ``sched_setaffinity``; ONNX Runtime would otherwise run a call that is
alone on the machine on every core): every figure is per that many cores, and a ratio compares one core with one.
Each encoder runs on ONNX Runtime as the service runs it (its config's detector and chip), on chips it cuts itself
from the same LFW photos:
- descriptor: batches of 32 and of one, warmed up first, median of repeats; without and with mirror averaging.
  dlib's ``compute_face_descriptor`` on a list of its own 150-px chips (its batch call).
- whole path, photo -> one embedding, one photo at a time: ours detector + chip + encoder (mirror averaging as the
  checkpoint ships); dlib's HOG + 5-point shape + chip + ResNet (face_recognition's pipeline).
``--before``: a second encoder measured in the same run (encoder v2: ``git show 17ecd41:model/weights/encoder.pt``).
dlib and its model files come with the ``dlib`` extra (the train extra includes it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, report  # noqa: E402

from model.embedder import load_encoder  # noqa: E402
from model.faces import FaceDetector  # noqa: E402
from model.train.subject import central_face  # noqa: E402

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median_s(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    return statistics.median(timed(fn, repeat))


def encoder_rows(name: str, checkpoint: Path | None, photos: list[np.ndarray], threads: int) -> dict[str, Any]:
    """One encoder's rows: descriptor faces/s and ms, detector ms per photo, photo to embedding ms."""
    shipped, card = load_encoder(checkpoint, threads=threads)
    plain, _ = load_encoder(checkpoint, flip=False, threads=threads)
    mirrored, _ = load_encoder(checkpoint, flip=True, threads=threads)
    detector = FaceDetector(shipped.config.detector, threads=threads)
    faces = [(x, central_face(detector.detect(x), x.shape[1], x.shape[0])) for x in photos]
    chips = np.stack([shipped.aligner(x, f) for x, f in faces if f is not None])
    batch = np.concatenate([chips] * (1 + 32 // len(chips)))[:32]
    r: dict[str, Any] = {"model": card.get("model_version"), "detector": detector.kind,
                         "chip": f"{shipped.config.chip} {shipped.config.input_size}px",
                         "mirror_averaging_as_shipped": shipped.flip}
    r["faces_per_s_b32"] = 32 / median_s(lambda: plain(batch), 10)
    r["flip_faces_per_s_b32"] = 32 / median_s(lambda: mirrored(batch), 10)
    r["one_face_ms"] = 1000 * median_s(lambda: plain(batch[:1]), 30)
    r["shipped_faces_per_s_b32"] = r["flip_faces_per_s_b32" if shipped.flip else "faces_per_s_b32"]
    r["detector_ms_per_photo"] = 1000 * median_s(lambda: [detector.detect(x) for x in photos], 3) / len(photos)

    def path(x: np.ndarray) -> None:
        f = central_face(detector.detect(x), x.shape[1], x.shape[0])
        if f is not None:
            shipped(shipped.aligner(x, f)[None])

    r["photo_to_embedding_ms"] = 1000 * median_s(lambda: [path(x) for x in photos], 3) / len(photos)
    return {f"{name}_{k}": v for k, v in r.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="ours: threads per call (1: per core, as dlib runs)")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped encoder")
    p.add_argument("--before", type=Path, help="a second encoder measured in the same run (e.g. v2)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: a.threads]))  # ours and dlib on the same cores

    import dlib

    from model.train.teacher import dlib_pipeline

    hog, predictor, resnet = dlib_pipeline()
    paths = sorted(LFW.glob("*/*_0001.jpg"))[: a.photos]
    photos = [np.ascontiguousarray(np.asarray(Image.open(x).convert("RGB"))) for x in paths]
    r: dict[str, Any] = {"threads": a.threads, "cores_pinned": sorted(os.sched_getaffinity(0)), "photos": len(photos),
                         "runtime": "onnx",
                         "command": command()}
    r.update(encoder_rows("ours", a.checkpoint, photos, a.threads))
    if a.before:
        r.update(encoder_rows("before", a.before, photos, a.threads))

    # dlib's descriptor on its own chips: HOG's box, its 5-point shape, its 150-px chip
    chips = []
    for x in photos:
        boxes = hog(x, 1)
        if len(boxes):
            chips.append(np.asarray(dlib.get_face_chip(x, predictor(x, boxes[0]), size=150)))
    batch_list = [np.ascontiguousarray(c) for c in (chips * (1 + 32 // len(chips)))[:32]]
    r["dlib_faces_per_s_b32"] = 32 / median_s(lambda: resnet.compute_face_descriptor(batch_list), 5)
    r["dlib_one_face_ms"] = 1000 * median_s(lambda: resnet.compute_face_descriptor(batch_list[0]), 15)
    r["dlib_hog_ms_per_photo"] = 1000 * median_s(lambda: [hog(x, 1) for x in photos], 3) / len(photos)

    def dlib_path(x: np.ndarray) -> None:
        boxes = hog(x, 1)
        if len(boxes):
            resnet.compute_face_descriptor(x, predictor(x, boxes[0]))

    r["dlib_photo_to_embedding_ms"] = 1000 * median_s(lambda: [dlib_path(x) for x in photos], 3) / len(photos)
    for who in ("ours", "before") if a.before else ("ours",):
        # per core: ours on --threads threads against dlib on one
        r[f"{who}_descriptor_ratio_per_core_as_shipped"] = (r[f"{who}_shipped_faces_per_s_b32"] / a.threads
                                                           / r["dlib_faces_per_s_b32"])
        r[f"{who}_path_ratio_per_core"] = r["dlib_photo_to_embedding_ms"] / (r[f"{who}_photo_to_embedding_ms"]
                                                                           * a.threads)
    report(r, a.json, digits=2)


if __name__ == "__main__":
    main()
