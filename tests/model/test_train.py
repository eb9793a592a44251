"""A training smoke run through main([...]) on real ORL faces, then evaluation harness pieces."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from model.encoder import Encoder, EncoderConfig, load_encoder, read_checkpoint, save_checkpoint
from model.errors import CheckpointError
from model.train import train
from model.train.average import main as average_main
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


def test_average_of_two_checkpoints(tmp_path: Path) -> None:

    torch.manual_seed(0)
    a, b = Encoder(EncoderConfig()), Encoder(EncoderConfig())
    save_checkpoint(tmp_path / "a.pt", a, card={"training": {"steps": 1}})
    save_checkpoint(tmp_path / "b.pt", b)
    assert average_main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "avg.pt")]) == 0
    avg = read_checkpoint(tmp_path / "avg.pt")
    for key, v in avg["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a.state_dict()[key] + b.state_dict()[key]) / 2)
    assert avg["card"]["training"]["weight_average_of"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    load_encoder(tmp_path / "avg.pt")  # loads like any checkpoint
    other = Encoder(EncoderConfig(embedding_size=64))
    save_checkpoint(tmp_path / "c.pt", other)
    with pytest.raises(CheckpointError):
        average_main([str(tmp_path / "a.pt"), str(tmp_path / "c.pt"), "--out", str(tmp_path / "bad.pt")])
