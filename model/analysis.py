"""One photo's analysis, before embedding: decode, detect (largest first), align, score quality, and (for
enrollment) cut each face's model-independent source crop. :mod:`model.photo_workers` runs it in worker processes;
:mod:`model.pipeline` embeds what it returns."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from model.faces import Aligner, Face, FaceDetector, Quality, quality, source_crop
from model.image import decode_image


@dataclass
class AnalyzedFace:
    face: Face
    crop: np.ndarray  # uint8 (S, S, 3), aligned
    quality: Quality
    embedding: np.ndarray | None = None  # float32 (D,), L2-normalised
    # the face with context (S x S, S <= 256), for re-embedding, losslessly encoded (:func:`encode_source`) where the
    # photo is analysed: in a photo worker, beside other requests' work rather than in the serving process
    source: bytes | None = None
    source_geometry: dict[str, Any] | None = None  # box and landmarks in the source crop's pixels

    def thumbnail_jpeg(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.crop).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    def source_image(self) -> bytes | None:
        return self.source


def encode_source(rgb: np.ndarray) -> bytes:
    """A source crop, losslessly (WebP): re-embedding then cuts the chip from the pixels the photo had. JPEG at
    quality 95 moved re-embedded vectors 0.031-0.043 from those made from the photo (median, 120 LFW faces, the
    112-px MobileNetV2 chip); lossless WebP 0.0009, at about twice the bytes. WebP's fastest method: on a 256-px LFW
    crop 17 ms against method 4's 211 ms (the default, which made indexing a group photo cost a fifth of a second a
    face) for 20% more bytes, the same pixels. Its least effort (``quality`` 0; Pillow's default is 80): about a
    third less time again for the same bytes within 0.1% (bench/photo_cost.py)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="WEBP", lossless=True, method=0, quality=0)
    return buf.getvalue()


@dataclass
class Analysis:
    width: int
    height: int
    faces: list[AnalyzedFace]  # largest first
    faces_found: int  # before the max_faces cut


def analyze_photo(detector: FaceDetector, aligner: Aligner, data: bytes, *, max_pixels: int, max_faces: int,
                  sources: bool) -> Analysis:
    """Decode ``data`` and analyse up to ``max_faces`` faces, largest first (no embeddings yet); ``sources``: also
    cut each face's source crop. Raises model.errors' ImageError for what is not a photo it can decode."""
    rgb = decode_image(data, max_pixels=max_pixels)
    found = detector.detect(rgb)
    faces = []
    for det in found[:max_faces]:
        crop = aligner(rgb, det)
        src, geometry = source_crop(rgb, det) if sources else (None, None)
        faces.append(AnalyzedFace(face=det, crop=crop, quality=quality(det, crop),
                                  source=None if src is None else encode_source(src), source_geometry=geometry))
    return Analysis(width=rgb.shape[1], height=rgb.shape[0], faces=faces, faces_found=len(found))
