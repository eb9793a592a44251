"""A training smoke run through main([...]) on real ORL faces, then evaluation harness pieces."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from model.encoder import load_encoder, read_checkpoint
from model.train import train
from model.train.lfw import parse_folds, people_in_folds, read_pairs
from tests.conftest import LFW, ORL


def test_training_smoke_run_and_resume(tmp_path: Path) -> None:
    args = ["--data", str(ORL), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--steps-per-epoch", "2", "-P", "4", "-K", "4", "--no-imagenet", "--threads", "2",
            "--warmup-steps", "1", "--cosface-weight", "0.1"]
    assert train.main([*args, "--epochs", "2"]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0.0 <= float(r["active_fraction"]) <= 1.0 for r in rows)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["train_state"]["step"] == 4
    # the alignment cache is complete and reused
    assert len((tmp_path / "cache" / "orl" / "index.tsv").read_text().splitlines()) == 400
    # resume continues from the checkpoint instead of starting over
    assert train.main([*args, "--epochs", "3", "--resume"]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    embedder, card = load_encoder(tmp_path / "run" / "last.pt")
    out = embedder(torch.zeros(3, 112, 112, 3, dtype=torch.uint8).numpy())
    assert out.shape == (3, 128)
    assert card["training"]["people"] == 40


def test_exclude_folds_drops_every_person_of_those_folds() -> None:
    pairs = read_pairs(LFW.parent / "pairs.txt")
    assert len(pairs) == 6000
    held = people_in_folds(pairs, parse_folds("1-2"))
    rest = people_in_folds(pairs, parse_folds("3-10"))
    assert held and not held & rest  # LFW folds share no people
    assert parse_folds("1-2,5") == [1, 2, 5]
