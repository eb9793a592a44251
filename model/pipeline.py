"""The serving pipeline: bytes -> decoded photo -> faces -> aligned crops -> quality -> embeddings.

Embedding goes through a :class:`Batcher`, so faces from concurrent requests share one forward pass.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.calibration import Calibration
from model.encoder import Embedder, load_encoder
from model.faces import Face, FaceDetector, Quality, quality
from model.image import decode_image

log = logging.getLogger(__name__)


@dataclass
class AnalyzedFace:
    face: Face
    crop: np.ndarray  # uint8 (S, S, 3), aligned
    quality: Quality
    embedding: np.ndarray | None = None  # float32 (D,), L2-normalised

    def thumbnail_jpeg(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.crop).save(buf, format="JPEG", quality=90)
        return buf.getvalue()


@dataclass
class Analysis:
    width: int
    height: int
    faces: list[AnalyzedFace]  # largest first
    faces_found: int  # before the max_faces cut


class Batcher:
    """Gathers crops from concurrent callers for up to ``wait_ms`` and embeds them in one batch."""

    def __init__(self, embedder: Embedder, *, max_batch: int = 64, wait_ms: float = 3.0,
                 on_batch: Any = None) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.wait = wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: queue.Queue[tuple[np.ndarray, Future[np.ndarray]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._thread.start()

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """crops: uint8 (N, S, S, 3) -> float32 (N, D). Blocks until the batch containing them ran."""
        if len(crops) == 0:
            return np.zeros((0, self.embedder.dim), np.float32)
        fut: Future[np.ndarray] = Future()
        self._queue.put((crops, fut))
        return fut.result()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            n = len(item[0])
            deadline = time.monotonic() + self.wait
            while n < self.max_batch:
                timeout = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=max(0.0, timeout)) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                items.append(nxt)
                n += len(nxt[0])
            try:
                out = self.embedder(np.concatenate([c for c, _ in items]))
                if self.on_batch:
                    self.on_batch(n)
                i = 0
                for crops, fut in items:
                    fut.set_result(out[i : i + len(crops)])
                    i += len(crops)
            except Exception as e:  # hand the error to every waiting caller
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)


class FacePipeline:
    def __init__(self, *, checkpoint: Path | None = None, min_face_size: int = 20, detect_max_side: int = 1024,
                 max_pixels: int = 40_000_000, torch_threads: int = 2, max_batch: int = 64,
                 batch_wait_ms: float = 3.0, on_batch: Any = None) -> None:
        torch.set_num_threads(torch_threads)
        self.embedder, self.card = load_encoder(checkpoint, max_batch=max_batch)
        self.model_version: str = self.card["model_version"]
        self.calibration = Calibration(self.card)
        self.detector = FaceDetector(min_face_size=min_face_size, max_side=detect_max_side)
        self.max_pixels = max_pixels
        self.batcher = Batcher(self.embedder, max_batch=max_batch, wait_ms=batch_wait_ms, on_batch=on_batch)

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def warm_up(self) -> None:
        """One detection and one embedding, so the first request does not pay for lazy initialisation."""
        rng = np.random.default_rng(0)
        self.detector.detect(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
        size = self.embedder.config.input_size
        self.batcher.embed(np.zeros((1, size, size, 3), np.uint8))

    def analyze(self, data: bytes, *, max_faces: int = 20, embed: bool = True) -> Analysis:
        """Decode, detect (largest first), align, score quality and (optionally) embed up to max_faces faces."""
        rgb = decode_image(data, max_pixels=self.max_pixels)
        found = self.detector.detect(rgb)
        faces = []
        for det in found[:max_faces]:
            crop = self.embedder.aligner(rgb, det)
            faces.append(AnalyzedFace(face=det, crop=crop, quality=quality(det, crop)))
        if embed and faces:
            emb = self.batcher.embed(np.stack([f.crop for f in faces]))
            for f, e in zip(faces, emb, strict=True):
                f.embedding = e
        return Analysis(width=rgb.shape[1], height=rgb.shape[0], faces=faces, faces_found=len(found))

    def close(self) -> None:
        self.batcher.close()


class CropMismatch(ValueError):
    """Stored crops were cut for another encoder's chip: they cannot be re-embedded faithfully."""


def embed_crop_jpegs(embedder: Embedder, blobs: list[bytes]) -> np.ndarray:
    """Embed stored aligned crops (JPEG bytes) -> float32 (n, D); used to re-embed a gallery.

    A crop serves only an encoder with the same chip; one of another size (the 112-px template crop of the
    MobileNetV2 encoders, for dlib's 150-px chip with its wider margin) would be stretched into the wrong
    geometry and embedded wrongly without a word, so it is refused."""
    size = embedder.config.input_size
    crops = []
    for b in blobs:
        img = Image.open(io.BytesIO(b)).convert("RGB")
        if img.size != (size, size):
            raise CropMismatch(f"stored crops are {img.width}x{img.height} px; this encoder cuts a {size}-px "
                               f"{embedder.config.chip} chip: enroll the photos again")
        crops.append(np.asarray(img))
    return embedder(np.stack(crops))
