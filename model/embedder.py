"""The encoder as the service runs it: chips in, unit vectors out, without PyTorch.

A checkpoint (``encoder.pt``, :mod:`model.encoder`) is what training writes and PyTorch reads. The service runs
the same network as an ONNX graph (``encoder.onnx`` beside the checkpoint: ``facesearch export`` and
``facesearch export-onnx`` write it) on ONNX Runtime, which needs neither torch nor the checkpoint: the graph
carries the checkpoint's config and model card, and the SHA-256 of the checkpoint it was exported from, so a
graph left beside a checkpoint that changed is never used. Without a matching graph the checkpoint is read with
PyTorch (the train extra) and exported in memory. :func:`load_encoder` is the one function that builds an
:class:`Embedder`; serving, evaluation and the benches all call it. Embeddings are float32 (N, D), L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import CheckpointError
from model.faces import ARCFACE_TEMPLATE_112, Aligner
from model.onnx_runtime import session

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "encoder.pt"
RUNTIMES = ("onnx", "torch")
# what a graph's metadata holds (ONNX metadata_props, read back by ONNX Runtime)
GRAPH_CONFIG, GRAPH_CARD, GRAPH_CHECKPOINT = "facesearch.config", "facesearch.card", "facesearch.checkpoint_sha256"


@dataclass
class EncoderConfig:
    arch: str = "mobilenet_v2"
    embedding_size: int = 128
    input_size: int = 112
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    template: list[list[float]] = field(default_factory=lambda: ARCFACE_TEMPLATE_112.tolist())
    model_version: str = "untrained"
    flip: bool = False  # average each face's embedding with its mirror image's (test-time augmentation)
    chip: str = "template"  # how the crop is cut: "template" (MTCNN's 5 points -> template) or "dlib5" (dlib's chip)
    chip_padding: float = 0.25  # dlib5: the padding around dlib's mean face
    # the face detector whose boxes and five points the chip was trained and evaluated on (model/faces.py);
    # configs from before it was named were MTCNN's
    detector: str = "mtcnn"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        cfg = cls(**known)
        cfg.mean = tuple(cfg.mean)  # type: ignore[assignment]
        cfg.std = tuple(cfg.std)  # type: ignore[assignment]
        return cfg


def preprocess(config: EncoderConfig, crops: np.ndarray, *, mirrored: bool = False) -> np.ndarray:
    """uint8 aligned crops (N, S, S, 3) -> normalised float32 (N, 3, S, S), contiguous; ``mirrored``: (2N, 3, S, S),
    the crops and then their mirror images. One pass writes the network's layout (casting, normalising and
    reordering separately, then copying into it, took 15 ms for 32 chips of 150 px, a tenth of embedding them)."""
    size = config.input_size
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(f"expected crops of shape (N, {size}, {size}, 3), got {crops.shape}")
    mean = np.asarray(config.mean, np.float32)[:, None, None] * np.float32(255.0)
    std = np.asarray(config.std, np.float32)[:, None, None] * np.float32(255.0)
    n = len(crops)
    x = np.empty((2 * n if mirrored else n, 3, size, size), np.float32)
    np.subtract(crops.transpose(0, 3, 1, 2), mean, out=x[:n])
    np.divide(x[:n], std, out=x[:n])
    if mirrored:
        x[n:] = x[:n, ..., ::-1]
    return x


# a network as the embedder runs it: float32 (N, 3, S, S) normalised -> float32 (N, D)
Net = Callable[[np.ndarray], np.ndarray]


class Embedder:
    """Batched inference with optional mirror averaging (a face and its mirror image in one forward pass) around
    a network run by ONNX Runtime (``runtime="onnx"``) or PyTorch (``"torch"``, :func:`model.encoder.torch_net`)."""

    def __init__(self, net: Net, config: EncoderConfig, *, flip: bool = False, max_batch: int = 64,
                 runtime: str = "onnx") -> None:
        self.net = net
        self.config = config
        self.flip = flip
        self.max_batch = max_batch
        self.runtime = runtime

    @property
    def dim(self) -> int:
        return self.config.embedding_size

    @cached_property
    def aligner(self) -> Aligner:
        """Cuts this encoder's chip from a photo and a detected face."""
        return make_aligner(self.config)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """crops: uint8 (N, S, S, 3) aligned faces -> float32 (N, D) L2-normalised embeddings."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start, n, size in batch_plan(len(crops), self.max_batch):
            chunk = crops[start : start + n]
            if size > n:  # zero faces pad the batch to its bucket; their rows are dropped
                chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), chunk.dtype)])
            e = self.net(preprocess(self.config, chunk, mirrored=self.flip))
            if self.flip:
                e = e[:size] + e[size:]
                e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            out.append(e[:n])
        return np.concatenate(out).astype(np.float32, copy=False)


def batch_plan(total: int, max_batch: int) -> list[tuple[int, int, int]]:
    """Split ``total`` faces into forward passes of a few fixed sizes: (start, faces, padded size).

    Sizes are powers of two up to ``max_batch`` (and ``max_batch`` itself). Every new input shape makes
    the allocator keep another set of activation buffers (about 13 MB each for MobileNetV2 at 112x112,
    measured), so a server seeing batch sizes 1..64 grows for a long time; with these buckets it settles
    after its first few requests. A pass is padded up to the next bucket when that wastes at most a
    quarter of it, otherwise the largest bucket that fits runs and the rest follows.
    """
    buckets = sorted({1 << i for i in range(max_batch.bit_length()) if 1 << i <= max_batch} | {max_batch})
    plan = []
    start = 0
    while start < total:
        left = total - start
        fits = max(b for b in buckets if b <= left)
        above = [b for b in buckets if b >= left]
        if fits == left:
            size = n = left
        elif above and above[0] - left <= above[0] // 4:
            size, n = above[0], left
        else:
            size = n = fits
        plan.append((start, n, size))
        start += n
    return plan


def make_aligner(config: EncoderConfig) -> Aligner:
    return Aligner(config.chip, config.input_size, config.template, config.chip_padding)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def graph_path(checkpoint: Path) -> Path:
    """Where a checkpoint's ONNX graph lives: beside it, ``encoder.pt`` -> ``encoder.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


class OnnxNet:
    """An encoder graph on ONNX Runtime: float32 (N, 3, S, S) -> float32 (N, D)."""

    def __init__(self, graph: bytes | Path, *, threads: int | None = None) -> None:
        source = str(graph) if isinstance(graph, Path) else graph
        try:
            self.session = session(source, threads=threads)
        except Exception as e:  # ONNX Runtime raises its own types for unreadable graphs
            raise CheckpointError(f"cannot read encoder graph {graph if isinstance(graph, Path) else ''}: {e}") from e
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.session.run(["e"], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]
        return out


def _read_graph(path: Path, checkpoint: Path | None, threads: int | None) -> tuple[OnnxNet, EncoderConfig,
                                                                                   dict[str, Any]]:
    """The graph at ``path`` with its config and card; with ``checkpoint``, only when exported from it."""
    net = OnnxNet(path, threads=threads)
    meta = net.metadata
    if GRAPH_CONFIG not in meta:
        raise CheckpointError(f"{path} is not a FaceSearch encoder graph (no {GRAPH_CONFIG} in its metadata)")
    if checkpoint is not None and meta.get(GRAPH_CHECKPOINT) != file_digest(checkpoint):
        raise CheckpointError(f"{path} was exported from another checkpoint than {checkpoint}")
    return net, EncoderConfig.from_dict(json.loads(meta[GRAPH_CONFIG])), json.loads(meta.get(GRAPH_CARD, "{}"))


def load_encoder(path: Path | None = None, *, flip: bool | None = None, max_batch: int = 64,
                 runtime: str = "onnx", threads: int | None = None) -> tuple[Embedder, dict[str, Any]]:
    """The encoder of a checkpoint (``.pt``) or of an exported graph (``.onnx``); returns (embedder, model card).

    ``runtime="onnx"`` (what the service runs, FACESEARCH_RUNTIME): a ``.onnx`` path, or the graph beside the
    checkpoint when it was exported from that checkpoint, runs without torch; otherwise PyTorch reads the
    checkpoint and exports its network in memory. ``runtime="torch"``: PyTorch runs the checkpoint's network.
    ``flip`` (mirror averaging) defaults to what the config says, so serving and evaluation embed the same way.
    ``threads``: threads inside each network call (default: the runtime's own choice).
    """
    if runtime not in RUNTIMES:
        raise CheckpointError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
    path = Path(path) if path is not None else SHIPPED_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"encoder checkpoint not found: {path}")
    net: Net
    if path.suffix == ".onnx":
        if runtime != "onnx":
            raise CheckpointError(f"{path} is an ONNX graph: it runs on ONNX Runtime only (runtime 'onnx')")
        net, config, card = _read_graph(path, None, threads)
    elif runtime == "onnx" and (exported := _graph_beside(path, threads)) is not None:
        net, config, card = exported
    else:
        try:
            from model.encoder import torch_net
        except ImportError as e:
            if runtime == "torch":
                raise CheckpointError(f"the torch runtime needs PyTorch ({e.name} is not installed): install the "
                                      "train extra (pip install 'facesearch[train]'), or run 'onnx'") from e
            raise CheckpointError(
                f"{path} has no ONNX graph exported from it beside it ({graph_path(path).name}), and reading a "
                f"checkpoint needs PyTorch ({e.name} is not installed): run `facesearch export-onnx {path}` where "
                f"the train extra is installed (pip install 'facesearch[train]'), or install it here") from e
        net, config, card = torch_net(path, runtime=runtime, threads=threads)
    card = dict(card)
    card.setdefault("model_version", config.model_version)
    use_flip = config.flip if flip is None else flip
    return Embedder(net, config, flip=use_flip, max_batch=max_batch, runtime=runtime), card


def _graph_beside(checkpoint: Path, threads: int | None) -> tuple[OnnxNet, EncoderConfig, dict[str, Any]] | None:
    """The graph beside ``checkpoint`` when it was exported from it; None when there is none (or another's)."""
    graph = graph_path(checkpoint)
    if not graph.is_file():
        return None
    try:
        return _read_graph(graph, checkpoint, threads)
    except CheckpointError as e:
        log.warning("not using %s: %s", graph, e)
        return None
