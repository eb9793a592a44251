"""`facesearch import-edgeface`: Idiap's EdgeFace-XS as a FaceSearch checkpoint, the starting point of encoder v3
(``facesearch train --init``).

The published file (``edgeface_xs_q.pt``, BSD-3-Clause) is a state dict of timm's ``edgenext_x_small`` with a
512-wide classifier, its linear layers dynamically quantized to int8 (per-tensor scale and zero point). Each is
dequantized to float32 (``q.dequantize()``: scale x (q - zero point)); the rest is float already. The backbone's
weights go to timm's architecture, the head's (layer norm, linear 512) to ours (:class:`model.encoder.FaceHead`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from model.encoder import EdgeFaceEncoder, edgeface_config, save_checkpoint
from model.errors import CheckpointError
from model.train.commands import parser

LINEAGE = ("EdgeFace-XS (Anjith George, Christophe Ecabert, Hatef Otroshi Shahreza, Ketan Kotwal, Sebastien Marcel; "
           "Idiap Research Institute, 2024; BSD-3-Clause), the int8 release edgeface_xs_q.pt, trained by its authors "
           "on WebFace12M (non-commercial research terms)")
SOURCE = ("yayoimizuha/face_recognition_train @ 3e631e35bf207a09aa2af79239961cfb14248c0a : "
          "checkpoints/edgeface_xs_q.pt (a copy of Idiap's release)")
PACKED = "._packed_params._packed_params"


def dequantized(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """EdgeFace's quantized state dict -> float32 tensors under timm's names (``model.`` prefix dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("model.")
        if name.endswith(PACKED):
            weight, bias = value
            base = name[: -len(PACKED)]
            out[f"{base}.weight"] = weight.dequantize().float()
            if bias is not None:
                out[f"{base}.bias"] = bias.float()
        elif name.endswith((".scale", ".zero_point", "._packed_params.dtype")):
            continue  # the quantization's own parameters
        else:
            out[name] = value.float()
    return out


def import_edgeface(path: Path, out: Path, embedding_size: int = 512) -> dict[str, Any]:
    """Write ``out`` (EdgeFace-XS in our architecture, float32); returns its card."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with warnings.catch_warnings():  # torch's notes on quantized storages
        warnings.simplefilter("ignore")
        # a plain state dict, but its quantized tensors need the full unpickler (weights_only refuses their packing)
        state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not any(k.endswith(PACKED) for k in state):
        raise CheckpointError(f"{path} is not EdgeFace's quantized state dict")
    weights = dequantized(state)
    config = edgeface_config(model_version=f"edgeface-xs-{digest[:8]}", embedding_size=embedding_size)
    model = EdgeFaceEncoder(config)
    model.backbone.load_state_dict({k: v for k, v in weights.items() if not k.startswith("head.")}, strict=True)
    head = {"norm.weight": weights["head.norm.weight"], "norm.bias": weights["head.norm.bias"],
            "fc.weight": weights["head.fc.weight"], "fc.bias": weights["head.fc.bias"]}
    if model.head.proj is not None:  # a projection to fewer numbers: random orthogonal rows, for training to fit
        torch.nn.init.orthogonal_(model.head.proj.weight)
        head["proj.weight"] = model.head.proj.weight.detach().clone()
    model.head.load_state_dict(head, strict=True)
    card: dict[str, Any] = {
        "training": {
            "initialised_from": f"{path.name} (sha256 {digest})",
            "source": SOURCE,
            "lineage": LINEAGE,
            "dequantized": "int8 linear layers -> float32 (scale x (q - zero point))",
            "steps": 0,
            "licence": "BSD-3-Clause (EdgeFace, Idiap); training data WebFace12M: non-commercial research only",
        }
    }
    save_checkpoint(out, model, card=card)
    return card


def main(argv: list[str] | None = None) -> int:
    a = parser("import-edgeface", __doc__).parse_args(argv)
    card = import_edgeface(a.checkpoint, a.out, a.embedding_size)
    print(json.dumps({"wrote": str(a.out), **card["training"]}, indent=2))
    return 0
