"""`facesearch export`: turn a training checkpoint + its evaluation report into shipped weights.

Writes ``OUT/encoder.pt`` (config, weights and model card; no optimizer state), ``OUT/model_card.json``
(the same card, readable) and ``OUT/encoder.onnx`` (the graph the service runs, :mod:`model.train.export_onnx`).
The card's thresholds come from the report measured on held-out people.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from model.embedder import SHIPPED_CHECKPOINT, EncoderConfig
from model.encoder import build_model, describe_arch, export_graph, read_checkpoint, save_checkpoint
from model.train.commands import parser


def describe(config: EncoderConfig) -> tuple[str, str]:
    """The card's words for the architecture and the chip."""
    arch, _ = describe_arch(config)
    detector = {"yunet": "YuNet", "mtcnn": "MTCNN"}[config.detector]
    if config.chip == "dlib5":
        chip = (f"dlib's 5-point shape predictor inside {detector}'s box, then dlib's face chip "
                f"({config.input_size} px, padding {config.chip_padding:g})")
    else:
        chip = (f"5-point similarity transform (least squares) of {detector}'s landmarks onto the "
                f"{config.input_size}-px ArcFace template")
    return arch, chip


def shipped_files(folder: Path) -> dict[str, dict[str, Any]]:
    """The SHA-256 and size of every graph the service runs from ``folder``, for the readable card."""
    from model.embedder import file_digest

    return {p.name: {"sha256": file_digest(p), "bytes": p.stat().st_size} for p in sorted(folder.glob("*.onnx"))}


def build_card(config: EncoderConfig, training: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    far = report.get("thresholds_from_distribution") or {}
    evaluation = {k: v for k, v in report.items() if k not in ("distributions", "checkpoint")}
    # the report names the checkpoint's version as evaluated; these are the same weights under their shipped name
    evaluation["evaluated_as"] = report.get("model_version")
    evaluation["model_version"] = config.model_version
    arch, chip = describe(config)
    _, started_from = describe_arch(config)
    return {
        "model_version": config.model_version,
        "architecture": arch,
        "input": {"size": config.input_size, "mean": config.mean, "std": config.std, "mirror_averaging": config.flip,
                  "alignment": chip},
        "embedding_size": config.embedding_size,
        "distance": "Euclidean between unit vectors (0..2); similarity = 1 - d^2/2",
        "training": training,
        "evaluation": evaluation,
        "thresholds": {
            "verification": report["threshold"],
            "verification_accuracy": report["accuracy"],
            "far_1e-3": far.get("far_0.001"),
            "far_1e-4": far.get("far_0.0001"),
        },
        "distributions": report.get("distributions"),
        "licenses": started_from
                    + ("fine-tuned by FaceSearch on LFW (research use), CelebA (non-commercial research use only)"
                       + (" and CFP (research use)" if "cfp" in json.dumps(training.get("data", [])).lower() else "")
                       if training.get("steps") else "not fine-tuned")
                    + ("; distilled from dlib's face recognition ResNet (public domain, CC0)" if training.get("teacher")
                       else "")
                    + ("; chips cut with dlib's 5-point shape predictor (CC0)." if config.chip == "dlib5" else "."),
    }


def main(argv: list[str] | None = None) -> int:
    a = parser("export", __doc__).parse_args(argv)
    out: Path = a.out or SHIPPED_CHECKPOINT.parent
    ckpt = read_checkpoint(a.checkpoint)
    config = EncoderConfig.from_dict(ckpt["config"])
    buf = io.BytesIO()
    torch.save(ckpt["state_dict"], buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    report = json.loads(a.report.read_text())
    config.flip = bool(report.get("flip", False))  # serve exactly as the report measured
    config.model_version = f"fs-{config.arch}-{config.embedding_size}d-{dt.date.today():%Y%m%d}-{digest}"
    if config.flip:
        config.model_version += "-flip"
    model = build_model(config)
    model.load_state_dict(ckpt["state_dict"])
    card = build_card(config, (ckpt.get("card") or {}).get("training", {}), report)
    save_checkpoint(out / "encoder.pt", model, card=card)
    export_graph(out / "encoder.pt")  # the graph the service runs, beside it
    # the readable card also names every shipped graph's digest (the checkpoint's card cannot hold its own graph's)
    (out / "model_card.json").write_text(json.dumps({**card, "files": shipped_files(out)}, indent=2))
    print(f"wrote {out / 'encoder.pt'} ({config.model_version})")
    return 0
