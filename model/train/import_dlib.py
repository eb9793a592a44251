"""`facesearch import-dlib`: dlib's face ResNet (``dlib_face_recognition_resnet_model_v1.dat``, CC0) as a
FaceSearch checkpoint, the starting point of encoder v2 (``facesearch train --init``).

The weights are read from dlib's own file by :func:`model.dlib_resnet.read_dlib_weights` (no dlib needed);
the file comes from the ``face_recognition_models`` package (the ``train`` extra) unless ``--dat`` names one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from model.dlib_resnet import DLIB_DAT, read_dlib_weights
from model.encoder import build_model, dlib_config, save_checkpoint
from model.train.commands import parser

LINEAGE = ("dlib's face recognition ResNet v1 (Davis King; dlib_face_recognition_resnet_model_v1.dat, public "
           "domain: CC0), trained by its author on about 3M faces of 7,485 people (VGG Face, FaceScrub, "
           "scraped photos); its author reports keeping LFW's people out")


def dlib_models_dir() -> Path:
    """The ``models`` folder of the face_recognition_models package (found by path: its ``__init__`` imports
    the deprecated pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("dlib's models are not installed: pip install -e '.[train]'")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def import_dlib(dat: Path, out: Path, chip: str = "dlib5") -> dict[str, Any]:
    """Write ``out`` (a checkpoint of the port with dlib's weights); returns its card."""
    digest = hashlib.sha256(dat.read_bytes()).hexdigest()
    config = dlib_config(model_version=f"dlib-resnet-v1-{digest[:8]}" + ("" if chip == "dlib5" else f"-{chip}"),
                         chip=chip)
    model = build_model(config)
    model.load_state_dict(read_dlib_weights(dat))
    card: dict[str, Any] = {
        "training": {
            "initialised_from": f"{dat.name} (sha256 {digest})",
            "lineage": LINEAGE,
            # its training set holds no LFW people, so every fold is held out
            "excluded_pairs": "LFW pairs.txt (by its author's account)",
            "excluded_folds": list(range(1, 11)),
            "steps": 0,
            "licence": "CC0 (public domain)",
        }
    }
    save_checkpoint(out, model, card=card)
    return card


def main(argv: list[str] | None = None) -> int:
    a = parser("import-dlib", __doc__).parse_args(argv)
    dat = a.dat or dlib_models_dir() / DLIB_DAT
    card = import_dlib(dat, a.out, a.chip)
    print(json.dumps({"wrote": str(a.out), **card["training"]}, indent=2))
    return 0
