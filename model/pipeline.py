"""The serving pipeline: bytes -> decoded photo -> faces -> aligned crops -> quality -> embeddings.

Everything up to the crops runs in worker processes (:mod:`model.photo_workers`); embedding goes through a
:class:`Batcher` in this process, so faces from concurrent requests share one forward pass.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from model.analysis import Analysis
from model.calibration import Calibration
from model.embedder import Embedder, load_encoder
from model.faces import face_in_source
from model.onnx_runtime import CORES
from model.photo_workers import PhotoWorkers, WorkerSpec

log = logging.getLogger(__name__)


class Batcher:
    """Gathers crops from concurrent callers into one batch: a batch waits up to ``wait_ms`` for the callers on
    their way (those that said so with :meth:`coming` and have not yet embedded), and not at all when none is, so a
    lone request never waits for company that is not coming."""

    def __init__(self, embedder: Embedder, *, max_batch: int = 64, wait_ms: float = 3.0,
                 on_batch: Any = None) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        self.wait = wait_ms / 1000.0
        self.on_batch = on_batch
        self._coming = 0
        self._coming_lock = threading.Lock()
        self._queue: queue.Queue[tuple[np.ndarray, Future[np.ndarray]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def coming(self) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
        """A caller on its way (detecting faces) for the batch to wait for; yields its ``embed``, to call once
        at most. Leaving without embedding withdraws it."""
        self._arrive(1)
        pending = [True]

        def embed(crops: np.ndarray) -> np.ndarray:
            if not pending[0]:
                raise RuntimeError("a caller embeds once per coming()")
            pending[0] = False
            return self.embed(crops, on_its_way=True)

        try:
            yield embed
        finally:
            if pending[0]:
                self._arrive(-1)

    def _arrive(self, n: int) -> None:
        with self._coming_lock:
            self._coming += n

    def embed(self, crops: np.ndarray, *, on_its_way: bool = False) -> np.ndarray:
        """crops: uint8 (N, S, S, 3) -> float32 (N, D). Blocks until the batch containing them ran."""
        fut: Future[np.ndarray] = Future()
        if len(crops):
            self._queue.put((crops, fut))
        else:
            fut.set_result(np.zeros((0, self.embedder.dim), np.float32))
        if on_its_way:  # counted until its crops are queued, so a batch being gathered keeps waiting for them
            self._arrive(-1)
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
                if self._queue.empty() and (timeout <= 0 or not self._coming):
                    break
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
    """Photos in, analysed and embedded faces out: ``photo_workers`` processes analyse (decode, detect, align:
    :mod:`model.photo_workers`), this process embeds (the :class:`Batcher`). ``threads``: threads inside each
    network call while other requests compute (every core when one computes alone: model.onnx_runtime)."""

    def __init__(self, *, checkpoint: Path | None = None, min_face_size: int = 20, detect_max_side: int = 1024,
                 max_pixels: int = 40_000_000, threads: int = 2, max_batch: int = 64,
                 batch_wait_ms: float = 3.0, on_batch: Any = None, runtime: str = "onnx",
                 photo_workers: int = 2, photo_timeout: float | None = None) -> None:
        # requests run in parallel threads: NumPy's BLAS (the small matrix products of re-embedding's alignment and
        # find-my-photos) keeps to the calling thread rather than each caller starting BLAS threads on two cores
        threadpool_limits(1, user_api="blas")
        self.embedder, self.card = load_encoder(checkpoint, max_batch=max_batch, runtime=runtime, threads=threads)
        self.model_version: str = self.card["model_version"]
        self.calibration = Calibration(self.card)
        self.workers = PhotoWorkers(photo_workers, WorkerSpec(min_face_size=min_face_size, max_side=detect_max_side,
                                                              threads=threads, max_pixels=max_pixels,
                                                              encoder=self.embedder.config),
                                    timeout=photo_timeout)
        self.batcher = Batcher(self.embedder, max_batch=max_batch, wait_ms=batch_wait_ms, on_batch=on_batch)

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def warm_up(self) -> None:
        """One embedding of the largest batch, alone and as side by side (each network has a session for each:
        model.onnx_runtime), so the first request does not pay for lazy initialisation, and the encoder's buffers
        are at the size a burst needs from the start (ONNX Runtime grows them in steps as larger batches first
        come: 130 MB more at start, RSS then steady within a few percent). The photo workers warm their detector
        as they start."""
        size = self.embedder.config.input_size
        for width in (nullcontext(), CORES.shared()):  # a call alone on every core, and calls side by side
            with width:
                self.batcher.embed(np.zeros((self.batcher.max_batch, size, size, 3), np.uint8))

    def analyze(self, data: bytes, *, max_faces: int = 20, embed: bool = True, sources: bool = False) -> Analysis:
        """Decode, detect (largest first), align, score quality and (optionally) embed up to max_faces faces;
        ``sources``: also cut each face's model-independent source crop (enrollment keeps it)."""
        with self.batcher.coming() if embed else nullcontext() as embed_crops:
            # this thread counts as computing while its worker does: the encoder's batches beside it then keep to
            # their few threads, and a photo analysed with no other request computing gets every core
            with CORES.computing():
                analysis = self.workers.analyze(data, max_faces=max_faces, sources=sources, alone=CORES.alone())
            faces = analysis.faces
            if embed_crops is not None and faces:
                emb = embed_crops(np.stack([f.crop for f in faces]))
                for f, e in zip(faces, emb, strict=True):
                    f.embedding = e
        return analysis

    def close(self) -> None:
        self.batcher.close()
        self.workers.close()


class StoredFaceCrops(Protocol):
    """What the gallery keeps of a face to embed it again (index.gallery.StoredCrop)."""

    @property
    def source(self) -> bytes | None: ...
    @property
    def source_geometry(self) -> dict[str, Any] | None: ...
    @property
    def chip(self) -> bytes | None: ...


def stored_chip(embedder: Embedder, stored: StoredFaceCrops) -> np.ndarray | None:
    """The chip this encoder cuts, from a face's stored crops; None when none serves it.

    The source crop serves every encoder: its aligner cuts the chip from it as from the photo. A face
    enrolled before source crops existed has only the chip of the model that enrolled it; that serves an
    encoder cutting a chip of the same size (the same chip, as the shipped encoders' chips differ in size),
    never one with a wider margin (the 112-px template chip for dlib's 150-px chip)."""
    if stored.source is not None and stored.source_geometry:
        rgb = np.asarray(Image.open(io.BytesIO(stored.source)).convert("RGB"))
        return embedder.aligner(rgb, face_in_source(stored.source_geometry))
    if stored.chip is not None:
        img = Image.open(io.BytesIO(stored.chip)).convert("RGB")
        size = embedder.config.input_size
        if img.size == (size, size):
            return np.asarray(img)
    return None


def embed_stored(embedder: Embedder, stored: Sequence[StoredFaceCrops]) -> list[np.ndarray | None]:
    """Embed faces again from their stored crops (for Gallery.reembed): a vector each, None where no crop serves."""
    chips = [stored_chip(embedder, s) for s in stored]
    ready = [c for c in chips if c is not None]
    vecs = iter(embedder(np.stack(ready)) if ready else [])
    return [None if c is None else next(vecs) for c in chips]
