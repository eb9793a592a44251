"""`facesearch` command: a thin front over the functions the service, trainer and gallery use.

Each subcommand imports its module only when run, so `facesearch serve` never loads training code.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from index.errors import GalleryError
from model.train import commands as training_commands

COMMANDS = {
    "serve": ("facesearch.commands.serve", "run the HTTP service (uvicorn, one worker)"),
    "align": ("model.train.align", "detect + align a dataset tree once, cache the crops"),
    "import-dlib": ("model.train.import_dlib", "dlib's face ResNet (CC0) as a checkpoint: encoder v2's start"),
    "import-edgeface": ("model.train.import_edgeface", "EdgeFace-XS (BSD-3-Clause) as a checkpoint: v3's start"),
    "teacher": ("model.train.teacher", "dlib embeddings of the training photos (distillation targets)"),
    "train": ("model.train.train", "train the triplet-loss encoder"),
    "evaluate": ("model.train.evaluate", "LFW View 2 evaluation of a checkpoint"),
    "evaluate-cfp": ("model.train.cfp", "CFP frontal-frontal and frontal-profile evaluation (splits 6-10 only)"),
    "calibrate-openset": ("model.train.openset", "search threshold per gallery size, measured on strangers"),
    "average": ("model.train.average", "average the weights of checkpoints from one training run"),
    "export": ("model.train.export", "package a trained checkpoint + its evaluation as shipped weights"),
    "export-onnx": ("model.train.export_onnx", "write a checkpoint's ONNX graph: served without PyTorch"),
    "gallery": ("facesearch.commands.gallery",
                "gallery maintenance: stats, export, import, rebuild-index, verify, reembed"),
    "enroll": ("facesearch.commands.enroll", "bulk-enroll an identity-per-folder tree"),
    "keys": ("facesearch.commands.keys", "API keys with roles: create (shown once), list, revoke"),
    "search": ("facesearch.commands.search", "who is in these photos (in-process or against a server)"),
    "photos": ("facesearch.commands.photos", "index a folder of photos (in-process or against a server), resumable"),
    "verify": ("facesearch.commands.verify", "are two photos (or a photo and an identity) the same person"),
}


# the commands that need the train extra (pip install 'facesearch[train]'): their options are parsed before their
# module is imported (model/train/commands.py), so --help and a mistyped option answer at once
TRAINING = set(training_commands.OPTIONS)


def docstring(module: str) -> str | None:
    """A module's docstring, read from its source without importing it (a training module imports torch)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text()))


def _usage() -> str:
    lines = ["usage: facesearch <command> [options]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `facesearch <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"facesearch: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    # FAISS's loader reports each CPU build it tries at INFO ("Could not load library with AVX2 support"): noise
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if name in TRAINING:
        training_commands.parser(name, docstring(COMMANDS[name][0])).parse_args(rest)  # exits on --help or a mistake
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except GalleryError as e:  # no such collection, a gallery of another model, ...: one line
        print(f"facesearch {name}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] in ("app", "model", "index", "facesearch"):
            raise
        package = e.name.split(".")[0]
        extra = "train" if name in TRAINING else "milvus" if package in ("pymilvus", "milvus_lite") else None
        hint = f"install it with: pip install 'facesearch[{extra}]'" if extra else f"install {package}"
        print(f"facesearch {name}: needs the Python package {package!r}, which is not installed; {hint}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
