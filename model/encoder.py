"""The face encoders in PyTorch, their self-describing checkpoint, and its export to the ONNX graph the service
runs (:mod:`model.embedder`, which needs no torch).

Three architectures: ``edgeface_xs`` (encoder v3: timm's EdgeNeXt-x-small backbone with our face head;
``facesearch import-edgeface`` makes its checkpoint from Idiap's EdgeFace-XS), ``dlib_resnet_v1`` (encoder v2:
dlib's face ResNet ported to PyTorch, :mod:`model.dlib_resnet`; ``facesearch import-dlib``) and ``mobilenet_v2``
(torchvision's ImageNet MobileNetV2 with an embedding head, trained from ImageNet by ``facesearch train``).
:func:`build_model` and the config's chip and detector are the only places that branch on them. Training writes
checkpoints with :func:`save_checkpoint`; :func:`export_graph` writes the graph beside one;
:func:`model.embedder.load_encoder` serves any of them.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.dlib_resnet import DLIB_MEAN_RGB, DLIB_SCALE, DlibResNet
from model.embedder import (
    GRAPH_CARD,
    GRAPH_CHECKPOINT,
    GRAPH_CONFIG,
    Embedder,
    EncoderConfig,
    Net,
    OnnxNet,
    file_digest,
    graph_path,
    preprocess,
)
from model.errors import CheckpointError
from model.faces import ARCFACE_TEMPLATE_112
from model.names import CHIPS
from model.onnx_runtime import to_onnx

CHECKPOINT_FORMAT = "facesearch-encoder/1"

_BACKBONES: dict[str, tuple[str, str, int]] = {
    # name: (torchvision builder, weights enum, feature channels)
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", 1280),
}


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


EDGEFACE_WIDTH = 512  # EdgeFace's own embedding: its linear layer's outputs


def edgeface_config(model_version: str = "edgeface-xs", embedding_size: int = EDGEFACE_WIDTH) -> EncoderConfig:
    """The config of EdgeFace-XS: YuNet's five points onto the ArcFace 112x112 template, ``(rgb - 127.5) / 127.5``;
    ``embedding_size`` other than 512 adds a linear projection of EdgeFace's 512 numbers (trained by us)."""
    return EncoderConfig(arch="edgeface_xs", embedding_size=embedding_size, input_size=112, mean=(0.5, 0.5, 0.5),
                         std=(0.5, 0.5, 0.5), template=ARCFACE_TEMPLATE_112.tolist(), model_version=model_version,
                         chip="template", detector="yunet")


def new_config(arch: str, *, embedding_size: int = 128, input_size: int = 112) -> EncoderConfig:
    """The config a new model of ``arch`` starts from (dlib's ResNet and EdgeFace: their own input and chip)."""
    if arch == "dlib_resnet_v1":
        return dlib_config()
    if arch == "edgeface_xs":
        return edgeface_config(embedding_size=embedding_size)
    return EncoderConfig(arch=arch, embedding_size=embedding_size, input_size=input_size)


def describe_arch(config: EncoderConfig) -> tuple[str, str]:
    """The model card's words for the architecture, and for the licence of what the weights started from."""
    if config.arch == "edgeface_xs":
        return ("edgeface_xs: EdgeNeXt-x-small (timm's edgenext_x_small, 1.3M parameters) -> average pool -> layer "
                "norm -> linear 512" + (f" -> linear {config.embedding_size}" if config.embedding_size != EDGEFACE_WIDTH
                                        else "") + " -> L2 norm",
                "Started from Idiap's EdgeFace-XS (BSD-3-Clause; trained on WebFace12M, whose terms allow "
                "non-commercial research only); ")
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
    if config.arch == "edgeface_xs":
        return EdgeFaceEncoder(config)
    return Encoder(config, imagenet_init=imagenet_init)


class FaceHead(nn.Module):
    """EdgeFace's head, ours: feature map (N, C, h, w) -> average pool -> layer norm -> linear ``width``
    (-> linear ``out`` when it differs: a projection trained by us) -> unit vectors (N, out)."""

    def __init__(self, channels: int, width: int, out: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.fc = nn.Linear(channels, width)
        self.proj = nn.Linear(width, out, bias=False) if out != width else None

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        e = self.fc(self.norm(f.mean(dim=(2, 3))))
        if self.proj is not None:
            e = self.proj(e)
        return F.normalize(e, dim=1)


class EdgeFaceEncoder(nn.Module):
    """Encoder v3's network: timm's EdgeNeXt-x-small feature extractor -> :class:`FaceHead`. The weights come
    from EdgeFace-XS (``facesearch import-edgeface``); timm builds the architecture only (nothing downloaded)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        import timm

        self.config = config
        backbone: Any = timm.create_model("edgenext_x_small", pretrained=False, num_classes=0, global_pool="")
        backbone.head = nn.Identity()  # the head is ours
        self.backbone = backbone
        self.head = FaceHead(int(backbone.num_features), EDGEFACE_WIDTH, config.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, 3, 112, 112) normalised -> float (N, D) unit vectors."""
        return self.head(self.backbone.forward_features(x))

    def parameter_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Stages for ``facesearch train --freeze``: the stem, the four stages, the head."""
        groups = [("stem", list(self.backbone.stem.parameters()))]
        groups += [(f"stage{i}", list(stage.parameters())) for i, stage in enumerate(self.backbone.stages)]
        return [*groups, ("head", list(self.head.parameters()))]


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
    """uint8 aligned crops (N, S, S, 3) -> normalised float tensor (N, 3, S, S), channels_last: what the embedder
    computes (:func:`model.embedder.preprocess`), as a tensor for training (its networks run channels_last)."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config

    def __call__(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(preprocess(self.config, crops))
        return x.contiguous(memory_format=torch.channels_last)


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


class TorchNet:
    """A network run by PyTorch as the embedder runs it: float32 (N, 3, S, S) array -> float32 (N, D) array,
    batch norms folded (a copy: ``model`` stays as it is), inference mode, channels_last."""

    def __init__(self, model: nn.Module) -> None:
        self.model = fuse_for_inference(model)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).contiguous(memory_format=torch.channels_last)
            out: np.ndarray = self.model(t).float().numpy()
        return out


def torch_embedder(model: nn.Module, *, flip: bool = False, max_batch: int = 64) -> Embedder:
    """An embedder of a PyTorch model as it stands (training's held-out checks and mirror teacher)."""
    return Embedder(TorchNet(model), model.config, flip=flip, max_batch=max_batch,  # type: ignore[arg-type]
                    runtime="torch")


def graph_of(model: nn.Module) -> bytes:
    """The model's network, batch norms folded, as an ONNX graph with a free batch axis: x (N, 3, S, S) -> e."""
    config: EncoderConfig = model.config  # type: ignore[assignment]
    size = config.input_size
    return to_onnx(fuse_for_inference(model), torch.zeros(2, 3, size, size), ["x"], ["e"],
                   {"x": {0: "n"}, "e": {0: "n"}})


def load_checkpoint_model(path: Path) -> tuple[nn.Module, EncoderConfig, dict[str, Any]]:
    """The eval-mode network of a checkpoint, its config and its model card."""
    ckpt = read_checkpoint(path)
    config = EncoderConfig.from_dict(ckpt["config"])
    model = build_model(config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not fit {config.arch}: {e}") from e
    return model.eval(), config, dict(ckpt.get("card") or {})


def torch_net(path: Path, *, runtime: str, threads: int | None) -> tuple[Net, EncoderConfig, dict[str, Any]]:
    """A checkpoint's network as :func:`model.embedder.load_encoder` runs it without an exported graph: PyTorch
    itself (``runtime="torch"``), or ONNX Runtime on the graph exported in memory (about 2 s)."""
    model, config, card = load_checkpoint_model(path)
    if runtime == "torch":
        if threads:
            torch.set_num_threads(threads)
        return TorchNet(model), config, card
    return OnnxNet(graph_of(model), threads=threads), config, card


def export_graph(checkpoint: Path, out: Path | None = None) -> Path:
    """Write the checkpoint's ONNX graph (default: beside it, ``.onnx``) carrying its config, its model card and
    the checkpoint's SHA-256 (:func:`model.embedder.load_encoder` serves it without torch); atomically."""
    import onnx

    model, config, card = load_checkpoint_model(checkpoint)
    graph = onnx.load_from_string(graph_of(model))
    for key, value in ((GRAPH_CONFIG, json.dumps(asdict(config))), (GRAPH_CARD, json.dumps(card)),
                       (GRAPH_CHECKPOINT, file_digest(checkpoint))):
        graph.metadata_props.add(key=key, value=value)
    out = Path(out) if out is not None else graph_path(checkpoint)
    write_atomically(out, graph.SerializeToString())
    return out


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600: the service may run as another user
    os.replace(tmp, path)


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
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_atomically(Path(path), buf.getvalue())


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
