"""dlib's face ResNet v1 (``dlib_face_recognition_resnet_model_v1.dat``, public domain: CC0) in PyTorch.

The network of dlib's ``dnn_face_recognition_ex.cpp``: 150x150 RGB -> conv 7x7/2 (32) -> affine -> relu ->
max pool 3x3/2 -> 15 residual blocks (32, 64, 128, 256 channels) -> mean over space -> fully connected 128.
dlib's stride-2 layers have no padding, and dlib adds tensors of different shapes by zero-padding the smaller
one in every dimension: a downsampling block's shortcut (a 2x2/2 average pool of its input) has fewer channels
than its conv path, and in the last two blocks a larger map (4x4 against 3x3, 2x2 against 1x1).
``read_dlib_weights`` reads dlib's own file (pure numpy, no dlib needed) into this module's state dict.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.errors import CheckpointError

# (in, out, stride) of the 15 residual blocks, input side first
BLOCKS: list[tuple[int, int, int]] = (
    [(32, 32, 1)] * 3
    + [(32, 64, 2)] + [(64, 64, 1)] * 3
    + [(64, 128, 2)] + [(128, 128, 1)] * 2
    + [(128, 256, 2)] + [(256, 256, 1)] * 2
    + [(256, 256, 2)]
)
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image: (pixel - mean) / 256
DLIB_SCALE = 256.0
DLIB_DAT = "dlib_face_recognition_resnet_model_v1.dat"


class Affine(nn.Module):
    """dlib's affine layer: a per-channel ``x * gamma + beta`` (its batch norm after training)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def conv(cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
    # dlib pads k // 2 at stride 1 and nothing at stride 2
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0)


class Block(nn.Module):
    """conv(stride) -> affine -> relu -> conv -> affine, added to the shortcut, relu.

    ``side``: the input's height and width. dlib adds tensors of different shapes by zero-padding the
    smaller to the larger in every dimension (the smaller keeping the first positions); the pads follow
    from the input size, so they are fixed here (static shapes: traceable, quantisable).
    """

    def __init__(self, cin: int, cout: int, stride: int, side: int) -> None:
        super().__init__()
        self.conv1: nn.Conv2d = conv(cin, cout, 3, stride)
        self.aff1: nn.Module = Affine(cout)
        self.conv2: nn.Conv2d = conv(cout, cout, 3, 1)
        self.aff2: nn.Module = Affine(cout)
        self.stride = stride
        conv_side = side if stride == 1 else (side - 3) // 2 + 1
        short_side = side if stride == 1 else side // 2
        self.side_out = max(conv_side, short_side)
        self.pad_conv = (0, self.side_out - conv_side, 0, self.side_out - conv_side)
        self.pad_short = (0, self.side_out - short_side, 0, self.side_out - short_side, 0, cout - cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        shortcut = x if self.stride == 1 else F.avg_pool2d(x, 2, 2)
        if any(self.pad_conv):
            y = F.pad(y, self.pad_conv)
        if any(self.pad_short):
            shortcut = F.pad(shortcut, self.pad_short)
        return F.relu(y + shortcut)


class DlibResNet(nn.Module):
    """x: float (N, 3, 150, 150), ``(rgb - DLIB_MEAN_RGB) / 256`` -> float (N, 128) unit vectors.

    dlib's own vectors are not unit length (mean norm about 1.4); the project measures distances between
    unit vectors, so the output is L2-normalised (dlib's ranking of pairs is unchanged up to the norms).
    """

    def __init__(self, embedding_size: int = 128, input_size: int = 150) -> None:
        super().__init__()
        if embedding_size != 128:
            raise CheckpointError(f"dlib's ResNet embeds in 128 dimensions, not {embedding_size}")
        self.conv1: nn.Conv2d = conv(3, 32, 7, 2)
        self.aff1: nn.Module = Affine(32)
        side = ((input_size - 7) // 2 + 1 - 3) // 2 + 1  # after conv1 and the max pool: 150 -> 72 -> 35
        blocks = []
        for cin, cout, stride in BLOCKS:
            blocks.append(Block(cin, cout, stride, side))
            side = blocks[-1].side_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, embedding_size, bias=False)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's own output: float (N, 128), not unit length."""
        x = F.max_pool2d(F.relu(self.aff1(self.conv1(x))), 3, 2)
        return self.fc(self.blocks(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(x), dim=1)

    def for_inference(self) -> nn.Module:
        """An eval-mode copy with every affine folded into the conv before it, channels_last."""
        fused = copy.deepcopy(self).eval()
        with torch.no_grad():
            pairs: list[tuple[nn.Conv2d, nn.Module]] = [(fused.conv1, fused.aff1)]
            for b in fused.block_list():
                pairs += [(b.conv1, b.aff1), (b.conv2, b.aff2)]
            for c, a in pairs:
                assert isinstance(a, Affine)
                c.weight.mul_(a.weight.view(-1, 1, 1, 1))
                assert c.bias is not None
                c.bias.mul_(a.weight).add_(a.bias)
        for b in fused.block_list():
            b.aff1 = b.aff2 = nn.Identity()
        fused.aff1 = nn.Identity()
        return fused.to(memory_format=torch.channels_last)

    def block_list(self) -> list[Block]:
        return [b for b in self.blocks if isinstance(b, Block)]

    def parameter_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameters by stage, input side first: stem, the four widths of blocks, fc (for freezing)."""
        groups: list[tuple[str, list[nn.Parameter]]] = [("stem", [*self.conv1.parameters(), *self.aff1.parameters()])]
        for width in (32, 64, 128, 256):
            ps = [p for blk, (_, cout, _) in zip(self.blocks, BLOCKS, strict=True) if cout == width
                  for p in blk.parameters()]
            groups.append((f"blocks{width}", ps))
        groups.append(("fc", list(self.fc.parameters())))
        return groups


def _compact_int(data: bytes, pos: int) -> tuple[int, int]:
    """dlib's integer encoding: a header byte (low 4 bits: byte count, top bit: sign), then the bytes
    little-endian. Returns (value, next position)."""
    head = data[pos]
    size = head & 0x0F
    if size == 0 or size > 8:
        raise ValueError("not a dlib integer")
    value = int.from_bytes(data[pos + 1 : pos + 1 + size], "little")
    return (-value if head & 0x80 else value), pos + 1 + size


def _header(data: bytes, pos: int) -> tuple[int, int] | None:
    """If a tensor starts at ``pos`` (version 2, four sizes), return (values, where they start)."""
    try:
        version, p = _compact_int(data, pos)
        if version != 2:
            return None
        dims = []
        for _ in range(4):
            v, p = _compact_int(data, p)
            dims.append(v)
    except (ValueError, IndexError):
        return None
    if any(d <= 0 for d in dims):
        return None
    return int(np.prod(dims)), p


def _tensors(data: bytes, sizes: list[int]) -> list[np.ndarray]:
    """The float tensors of a serialized dlib network, in file order, that have these sizes: each is the next
    tensor header (version 2, four sizes) of exactly that many values, followed by little-endian float32.

    dlib writes a network input side first. The layers' settings between the tensors hold a few runs of bytes
    that read as small tensors; asking for each expected size in turn steps over them.
    """
    found: list[np.ndarray] = []
    pos = 0
    for size in sizes:
        while True:
            pos = data.find(b"\x01\x02", pos)  # the compact encoding of the version, 2
            if pos < 0:
                raise CheckpointError(f"no tensor of {size} values after the {len(found)} found")
            head = _header(data, pos)
            if head is not None and head[0] == size and head[1] + 4 * size <= len(data):
                found.append(np.frombuffer(data, dtype="<f4", count=size, offset=head[1]).copy())
                pos = head[1] + 4 * size
                break
            pos += 1
    return found


def read_dlib_weights(path: Path) -> dict[str, torch.Tensor]:
    """dlib's .dat -> a :class:`DlibResNet` state dict. Raises CheckpointError when the file is not that network."""
    model = DlibResNet()
    layers: list[tuple[str, nn.Module]] = [("conv1", model.conv1), ("aff1", model.aff1)]
    for i, b in enumerate(model.block_list()):
        layers += [(f"blocks.{i}.conv1", b.conv1), (f"blocks.{i}.aff1", b.aff1),
                   (f"blocks.{i}.conv2", b.conv2), (f"blocks.{i}.aff2", b.aff2)]
    layers.append(("fc", model.fc))
    want = [sum(p.numel() for p in m.parameters()) for _, m in layers]
    try:
        tensors = _tensors(Path(path).read_bytes(), want)
    except CheckpointError as e:
        raise CheckpointError(f"{path} is not dlib's face ResNet v1: {e}") from e
    state: dict[str, torch.Tensor] = {}
    for (name, module), t in zip(layers, tensors, strict=True):
        if isinstance(module, nn.Conv2d):
            w = module.weight
            n = w.numel()
            state[f"{name}.weight"] = torch.from_numpy(t[:n].reshape(w.shape))
            state[f"{name}.bias"] = torch.from_numpy(t[n:])
        elif isinstance(module, Affine):
            c = module.weight.numel()
            state[f"{name}.weight"] = torch.from_numpy(t[:c])
            state[f"{name}.bias"] = torch.from_numpy(t[c:])
        else:  # fc: stored input by output
            state[f"{name}.weight"] = torch.from_numpy(t.reshape(256, 128).T.copy())
    return state
