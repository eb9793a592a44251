"""The face encoders, their self-describing checkpoint, and the one function that builds model + chip +
preprocessing from it.

Two architectures: ``mobilenet_v2`` (torchvision's ImageNet MobileNetV2 with an embedding head, trained by
``facesearch train``) and ``dlib_resnet_v1`` (dlib's face ResNet ported to PyTorch, :mod:`model.dlib_resnet`;
``facesearch import-dlib`` makes its checkpoint). :func:`build_model` and :meth:`Embedder.aligner` are the only
places that branch on them. Serving and evaluation both call :func:`load_encoder`; training writes checkpoints
with :func:`save_checkpoint`. Embeddings are float32, shape (N, D), L2-normalised.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.dlib_resnet import DLIB_MEAN_RGB, DLIB_SCALE, DlibResNet
from model.errors import CheckpointError
from model.faces import ARCFACE_TEMPLATE_112, Aligner
from model.names import CHIPS

CHECKPOINT_FORMAT = "facesearch-encoder/1"
SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "encoder.pt"
SHIPPED_CARD = Path(__file__).parent / "weights" / "model_card.json"

_BACKBONES: dict[str, tuple[str, str, int]] = {
    # name: (torchvision builder, weights enum, feature channels)
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", 1280),
}


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        cfg = cls(**known)
        cfg.mean = tuple(cfg.mean)  # type: ignore[assignment]
        cfg.std = tuple(cfg.std)  # type: ignore[assignment]
        return cfg


RUNTIMES = ("torch", "onnx")
# MTCNN's five points (eye centres, nose tip, mouth corners) where they sit on average in dlib's 150x150 chip,
# measured on 197 of dlib's own chips of LFW photos outside the evaluation folds (../shared/notes/dlib-resnet-v1.md):
# the "template" chip of dlib's ResNet, the alternative to dlib's own 5-point chip
DLIB_CHIP_TEMPLATE_150 = [[43.20, 34.62], [105.19, 34.50], [73.54, 71.12], [47.01, 101.51], [101.98, 101.73]]


def dlib_config(model_version: str = "dlib-resnet-v1", chip: str = "dlib5") -> EncoderConfig:
    """The config of dlib's ResNet: 150x150 chip, ``(rgb - mean) / 256`` as dlib's input_rgb_image does."""
    if chip not in CHIPS:
        raise CheckpointError(f"unknown chip {chip!r}")
    return EncoderConfig(arch="dlib_resnet_v1", embedding_size=128, input_size=150,
                         mean=tuple(m / 255.0 for m in DLIB_MEAN_RGB),  # type: ignore[arg-type]
                         std=(DLIB_SCALE / 255.0,) * 3,
                         template=[list(p) for p in DLIB_CHIP_TEMPLATE_150], model_version=model_version,
                         chip=chip)


def new_config(arch: str, *, embedding_size: int = 128, input_size: int = 112) -> EncoderConfig:
    """The config a new model of ``arch`` starts from (dlib's ResNet: its own input, chip and size)."""
    if arch == "dlib_resnet_v1":
        return dlib_config()
    return EncoderConfig(arch=arch, embedding_size=embedding_size, input_size=input_size)


def describe_arch(config: EncoderConfig) -> tuple[str, str]:
    """The model card's words for the architecture, and for the licence of what the weights started from."""
    if config.arch == "dlib_resnet_v1":
        return ("dlib_resnet_v1: dlib's face ResNet (conv 7x7, 15 residual blocks of 32-256 channels, fc 128; "
                "public domain, CC0) ported to PyTorch -> L2 norm",
                "Started from dlib's face recognition ResNet v1 (Davis King, public domain: CC0); ")
    return (f"{config.arch} (ImageNet-initialised, torchvision) -> average pool -> linear -> BN -> L2 norm",
            "Backbone initialised from torchvision's ImageNet MobileNetV2 (BSD-3-Clause); ")


def has_imagenet_start(config: EncoderConfig) -> bool:
    """Whether the architecture's backbone can start from ImageNet weights (torchvision's)."""
    return config.arch in _BACKBONES


def build_model(config: EncoderConfig, *, imagenet_init: bool = False) -> nn.Module:
    """The network a config describes (random weights, or ImageNet features for ``mobilenet_v2``)."""
    if config.arch == "dlib_resnet_v1":
        model: nn.Module = DlibResNet(config.embedding_size, config.input_size)
        model.config = config  # type: ignore[assignment]
        return model
    return Encoder(config, imagenet_init=imagenet_init)


class Encoder(nn.Module):
    """ImageNet backbone -> global average pool -> linear -> batch norm -> L2 normalisation."""

    def __init__(self, config: EncoderConfig, *, imagenet_init: bool = False) -> None:
        super().__init__()
        if config.arch not in _BACKBONES:
            raise CheckpointError(f"unknown encoder architecture {config.arch!r}")
        import torchvision

        builder, weights_enum, channels = _BACKBONES[config.arch]
        weights = getattr(torchvision.models, weights_enum).IMAGENET1K_V1 if imagenet_init else None
        backbone = getattr(torchvision.models, builder)(weights=weights)
        self.config = config
        self.features = backbone.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(channels, config.embedding_size)
        self.bn = nn.BatchNorm1d(config.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3, S, S) normalised -> float (N, D) unit vectors."""
        f = self.pool(self.features(x)).flatten(1)
        return F.normalize(self.bn(self.head(self.dropout(f))), dim=1)


class Preprocess:
    """uint8 aligned crops (N, S, S, 3) -> normalised float tensor (N, 3, S, S), channels_last."""

    def __init__(self, config: EncoderConfig) -> None:
        self.size = config.input_size
        self.mean = torch.tensor(config.mean).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(config.std).view(1, 3, 1, 1) * 255.0

    def __call__(self, crops: np.ndarray) -> torch.Tensor:
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"expected crops of shape (N, {self.size}, {self.size}, 3), got {crops.shape}")
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every batch norm (dlib: affine) folded into the convolution or
    linear layer before it, channels_last. Same outputs to float rounding, about 1.8x faster on CPU for
    MobileNetV2, which has a batch norm after each of its 52 convolutions (torch.fx)."""
    from torch.fx.experimental.optimization import fuse

    if isinstance(model, DlibResNet):
        return model.for_inference()

    was_training = model.training
    fused = fuse(model.eval(), inplace=False).to(memory_format=torch.channels_last)
    model.train(was_training)
    return fused


class Embedder:
    """Inference wrapper: batch norms folded, batched, inference_mode, channels_last, optional mirror
    averaging (the photo and its mirror image in one forward pass)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, *, flip: bool = False,
                 max_batch: int = 64, runtime: str = "torch") -> None:
        self.model = fuse_for_inference(model)
        self.preprocess = preprocess
        self.config: EncoderConfig = model.config  # type: ignore[assignment]
        self.flip = flip
        self.max_batch = max_batch
        if runtime not in RUNTIMES:
            raise CheckpointError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
        self.runtime = runtime
        self._onnx = None
        if runtime == "onnx":
            from model.onnx_runtime import OnnxModel

            self._onnx = OnnxModel(self.model, self.config.input_size, threads=torch.get_num_threads())

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
        with torch.inference_mode():
            for start, n, size in batch_plan(len(crops), self.max_batch):
                chunk = crops[start : start + n]
                if size > n:  # zero faces pad the batch to its bucket; their rows are dropped
                    chunk = np.concatenate([chunk, np.zeros((size - n, *chunk.shape[1:]), chunk.dtype)])
                x = self.preprocess(chunk)
                if self.flip:
                    x = torch.cat([x, torch.flip(x, dims=[3])]).contiguous(memory_format=torch.channels_last)
                e = self._forward(x)
                if self.flip:
                    e = F.normalize(e[:size] + e[size:], dim=1)
                out.append(e[:n].float().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None:
            return torch.from_numpy(self._onnx(x.numpy()))
        out: torch.Tensor = self.model(x)
        return out


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


def save_checkpoint(path: Path, model: nn.Module, card: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Write atomically: config + weights (+ model card, + training state in ``extra``)."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.config),  # type: ignore[call-overload]
        "state_dict": model.state_dict(),
        "card": card or {},
    }
    if extra:
        payload.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(payload, tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600: the service may run as another user
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"encoder checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises a zoo of types for corrupt files
        raise CheckpointError(f"cannot read encoder checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return ckpt


def load_encoder(path: Path | None = None, *, flip: bool | None = None,
                 max_batch: int = 64, runtime: str = "torch") -> tuple[Embedder, dict[str, Any]]:
    """Build the encoder and its preprocessing from a checkpoint; returns (embedder, model card).

    ``flip`` (mirror averaging) defaults to what the checkpoint's config says, so serving and
    evaluation embed the same way. ``runtime``: ``torch``, or ``onnx`` (the same network exported to and run by
    ONNX Runtime: what the service runs by default, FACESEARCH_RUNTIME).
    """
    path = Path(path) if path is not None else SHIPPED_CHECKPOINT
    ckpt = read_checkpoint(path)
    config = EncoderConfig.from_dict(ckpt["config"])
    model = build_model(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not fit {config.arch}: {e}") from e
    card = dict(ckpt.get("card") or {})
    card.setdefault("model_version", config.model_version)
    use_flip = config.flip if flip is None else flip
    return Embedder(model, Preprocess(config), flip=use_flip, max_batch=max_batch, runtime=runtime), card
