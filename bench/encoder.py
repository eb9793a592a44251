"""Encoder and detector speed on this machine, beside dlib's (face_recognition) in the same run.

    python bench/encoder.py [--photos 64] [--json PATH]

Prints faces/s for batches of 32, one-face latency, the cost of mirror averaging, MTCNN detection per
250x250 LFW photo, and the same figures for dlib's HOG detector and ResNet encoder, with ratios.
dlib is optional: pip install dlib-bin face_recognition_models "setuptools<81"; pip install --no-deps face_recognition
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.encoder import load_encoder
from model.faces import FaceDetector, align, central_face

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    paths = sorted(LFW.glob("*/*_0001.jpg"))[: a.photos]
    photos = [np.asarray(Image.open(x).convert("RGB")) for x in paths]
    detector = FaceDetector()
    embedder, card = load_encoder(a.checkpoint, flip=False)
    flip_embedder, _ = load_encoder(a.checkpoint, flip=True)
    size = embedder.config.input_size

    detector.detect(photos[0])
    det = timed(lambda: [detector.detect(x) for x in photos], 1)[0] / len(photos)
    crops = []
    for x in photos:
        f = central_face(detector.detect(x), x.shape[1], x.shape[0])
        if f is not None:
            crops.append(align(x, f.landmarks, size))
    crops_arr = np.stack(crops)
    batch = np.concatenate([crops_arr] * (1 + 32 // len(crops_arr)))[:32]
    embedder(batch)
    b32 = statistics.median(timed(lambda: embedder(batch), 10))
    one = statistics.median(timed(lambda: embedder(batch[:1]), 50))
    b32_flip = statistics.median(timed(lambda: flip_embedder(batch), 5))
    r = {
        "model": card.get("model_version"),
        "threads": a.threads,
        "encoder_faces_per_s_b32": 32 / b32,
        "encoder_one_face_ms": one * 1000,
        "encoder_flip_faces_per_s_b32": 32 / b32_flip,
        "mtcnn_ms_per_photo": det * 1000,
        "photos": len(photos),
    }
    try:
        import face_recognition
    except ImportError:
        print("dlib (face_recognition) not installed: reference figures skipped")
    else:
        face_recognition.face_locations(photos[0])
        locs = [face_recognition.face_locations(x) for x in photos[:16]]
        hog = timed(lambda: [face_recognition.face_locations(x) for x in photos], 1)[0] / len(photos)
        pairs = [(x, loc[:1]) for x, loc in zip(photos, locs, strict=False) if loc][:16]
        enc = timed(lambda: [face_recognition.face_encodings(x, loc, model="small") for x, loc in pairs], 1)[0]
        dlib_face = enc / len(pairs)
        r.update({
            "dlib_faces_per_s": 1 / dlib_face,
            "dlib_one_face_ms": dlib_face * 1000,
            "dlib_hog_ms_per_photo": hog * 1000,
            "encoder_speedup_vs_dlib": (32 / b32) * dlib_face,
            "detector_speedup_vs_dlib_hog": hog / det,
        })
    for k, v in r.items():
        print(f"{k:32s} {v:.2f}" if isinstance(v, float) else f"{k:32s} {v}")
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
