"""A training smoke run through main([...]) on real ORL faces, then evaluation harness pieces."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from model.embedder import EncoderConfig, load_encoder
from model.encoder import Encoder, read_checkpoint, save_checkpoint
from model.errors import CheckpointError
from model.train import train
from model.train.average import main as average_main
from model.train.lfw import parse_folds, people_in_folds, read_pairs
from model.train.teacher import main as teacher_main
from model.train.teacher import read_teacher
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
    assert len((tmp_path / "cache" / "template112" / "orl" / "index.tsv").read_text().splitlines()) == 400
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


def _lfw_tree(tmp_path: Path, people: list[str], photos: int = 2) -> Path:
    root = tmp_path / "lfw-small"
    for name in people:
        (root / name).mkdir(parents=True)
        for k in range(1, photos + 1):
            (root / name / f"{name}_{k:04d}.jpg").symlink_to(LFW / name / f"{name}_{k:04d}.jpg")
    return root


PEOPLE6 = ["Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Tony_Blair", "Hugo_Chavez"]


def _pairs_file(tmp_path: Path) -> Path:
    """One fold: two matched pairs, two mismatched, naming four of PEOPLE6."""
    p = tmp_path / "pairs.txt"
    p.write_text("1\t2\nColin_Powell\t1\t2\nDonald_Rumsfeld\t1\t2\n"
                 "George_W_Bush\t1\tGerhard_Schroeder\t1\nColin_Powell\t2\tGeorge_W_Bush\t2\n")
    return p


def test_a_training_run_leaves_out_the_excluded_folds_people(tmp_path: Path) -> None:
    root = _lfw_tree(tmp_path, [*PEOPLE6, "Jean_Chretien"])
    args = ["--data", str(root), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--steps-per-epoch", "1", "-P", "2", "-K", "2", "--no-imagenet", "--threads", "2", "--warmup-steps", "1",
            "--epochs", "1", "--exclude-pairs", str(_pairs_file(tmp_path)), "--exclude-folds", "1"]
    (tmp_path / "out.txt").write_text("# kept out too\nTony_Blair\n")
    assert train.main([*args, "--exclude-people", str(tmp_path / "out.txt")]) == 0
    trained = (tmp_path / "run" / "people.txt").read_text().split()
    assert trained == ["Hugo_Chavez", "Jean_Chretien"]
    card = read_checkpoint(tmp_path / "run" / "last.pt")["card"]["training"]
    assert card["people"] == 2 and card["excluded_folds"] == [1] and card["excluded_people"] == 5


def test_fine_tuning_dlib_port_keeps_frozen_stages(tmp_path: Path) -> None:
    from model.dlib_resnet import DLIB_DAT
    from model.train.import_dlib import dlib_models_dir, import_dlib

    import_dlib(dlib_models_dir() / DLIB_DAT, tmp_path / "dlib.pt")
    root = _lfw_tree(tmp_path, PEOPLE6)
    args = ["--data", str(root), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "ft"),
            "--steps-per-epoch", "1", "-P", "3", "-K", "2", "--threads", "2", "--warmup-steps", "1",
            "--epochs", "1", "--lr", "1e-3", "--init", str(tmp_path / "dlib.pt"), "--freeze", "stem,blocks32"]
    assert train.main([*args, "--mirror-distill", "1"]) == 0
    rows = list(csv.DictReader((tmp_path / "ft" / "log.csv").open()))
    assert 0 < float(rows[-1]["distill_loss"]) < 0.1  # the start is close to its own mirror average
    assert "mirror-averaged" in read_checkpoint(tmp_path / "ft" / "last.pt")["card"]["training"]["loss"]
    before = read_checkpoint(tmp_path / "dlib.pt")
    after = read_checkpoint(tmp_path / "ft" / "last.pt")
    assert after["config"]["arch"] == "dlib_resnet_v1" and after["config"]["chip"] == "dlib5"
    assert after["card"]["training"]["frozen"] == ["stem", "blocks32"]
    a, b = before["state_dict"], after["state_dict"]
    assert torch.equal(a["conv1.weight"], b["conv1.weight"]) and torch.equal(a["blocks.2.conv2.weight"],
                                                                                b["blocks.2.conv2.weight"])
    assert not torch.equal(a["fc.weight"], b["fc.weight"]) and not torch.equal(a["blocks.3.conv1.weight"],
                                                                                 b["blocks.3.conv1.weight"])
    # dlib chips (150 px) cached apart from other chips
    assert (tmp_path / "cache" / "dlib5-150-p0.25" / "lfw-small" / "index.tsv").exists()
    with pytest.raises(SystemExit, match="unknown stage"):
        train.main([*args[:-2], "--freeze", "blocks512", "--out", str(tmp_path / "bad")])
    # WiSE-FT: a weighted average with the start, recorded in the card
    assert average_main([str(tmp_path / "ft" / "last.pt"), str(tmp_path / "dlib.pt"), "--weights", "0.25", "0.75",
                         "--out", str(tmp_path / "wise.pt")]) == 0
    wise = read_checkpoint(tmp_path / "wise.pt")
    torch.testing.assert_close(wise["state_dict"]["fc.weight"], 0.25 * b["fc.weight"] + 0.75 * a["fc.weight"])
    assert wise["card"]["training"]["average_weights"] == [0.25, 0.75]


def test_evaluate_end_to_end_with_dlib_reference(tmp_path: Path) -> None:
    import json

    from model.dlib_resnet import DLIB_DAT
    from model.train.evaluate import main as evaluate_main
    from model.train.import_dlib import dlib_models_dir, import_dlib

    import_dlib(dlib_models_dir() / DLIB_DAT, tmp_path / "dlib.pt")
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(tmp_path / "dlib.pt"), "--data", str(LFW), "--pairs",
                          str(_pairs_file(tmp_path)), "--folds", "1", "--out", str(out), "--reference", "dlib"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 4 and report["photos"] == 7 and report["folds"] == [1]
    assert report["model_version"].startswith("dlib-resnet-v1-") and report["detection_failures"] == 0
    assert {"accuracy", "auc", "eer", "threshold", "val_at_far_1e-3"} <= set(report)
    assert report["accuracy"] == 1.0 and report["auc"] == 1.0  # four easy pairs: dlib's network gets them
    ref = report["reference"]
    assert ref["name"].startswith("dlib") and ref["accuracy"] == 1.0 and ref["pipeline_ms_median"] > 0
    assert (out / "roc.png").stat().st_size > 1000
    # a checkpoint whose card holds folds out refuses folds it trained on
    with pytest.raises(SystemExit, match="trained on"):
        evaluate_main(["--checkpoint", str(tmp_path / "dlib.pt"), "--data", str(LFW), "--pairs",
                       str(_pairs_file(tmp_path)), "--folds", "11", "--out", str(out)])


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


def small_orl(tmp_path: Path, people: int = 6, photos: int = 4) -> Path:
    """An identity-per-folder tree of links to a few real ORL people."""
    root = tmp_path / "orl-small"
    for s in range(1, people + 1):
        (root / f"s{s}").mkdir(parents=True)
        for i in range(1, photos + 1):
            (root / f"s{s}" / f"{i}.pgm").symlink_to(ORL / f"s{s}" / f"{i}.pgm")
    return root


def test_teacher_embeds_each_photo_once_and_separates_people(tmp_path: Path) -> None:
    root = small_orl(tmp_path)
    out = tmp_path / "teacher"
    assert teacher_main(["--data", str(root), "--out", str(out), "--workers", "1"]) == 0
    table = read_teacher(out, root)
    assert sorted(table) == sorted(f"s{s}/{i}.png" for s in range(1, 7) for i in range(1, 5))  # crop keys
    emb = np.stack(list(table.values()))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    person = np.array([k.split("/")[0] for k in table])
    d = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    same = (person[:, None] == person[None]) & ~np.eye(len(person), dtype=bool)
    assert d[same].mean() < d[person[:, None] != person[None]].mean()
    # a rerun embeds nothing again; a new photo is added to the same file
    (root / "s1" / "5.pgm").symlink_to(ORL / "s1" / "5.pgm")
    before = (out / "orl-small.npz").stat().st_mtime_ns
    assert teacher_main(["--data", str(root), "--out", str(out), "--workers", "1"]) == 0
    assert len(read_teacher(out, root)) == 25
    np.testing.assert_array_equal(read_teacher(out, root)["s2/1.png"], table["s2/1.png"])
    assert (out / "orl-small.npz").stat().st_mtime_ns != before


def test_training_with_a_teacher_from_a_checkpoint(tmp_path: Path) -> None:
    root = small_orl(tmp_path)
    assert teacher_main(["--data", str(root), "--out", str(tmp_path / "teacher"), "--workers", "1"]) == 0
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "init.pt", Encoder(EncoderConfig(), imagenet_init=False))
    args = ["--data", str(root), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--steps-per-epoch", "2", "-P", "3", "-K", "4", "--threads", "2", "--warmup-steps", "1",
            "--epochs", "1", "--teacher", str(tmp_path / "teacher"), "--init", str(tmp_path / "init.pt")]
    assert train.main(args) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert float(rows[-1]["distill_loss"]) > 0
    card = read_checkpoint(tmp_path / "run" / "last.pt")["card"]["training"]
    assert "dlib" in card["loss"] and card["initialised_from"] == f"{tmp_path / 'init.pt'} (untrained)"
    assert card["teacher"]["photos_with_target"] == 24 and card["teacher"]["matching"] == "embedding"
    # the relational variant matches distances instead of vectors
    assert train.main([*args, "--distill", "relational", "--out", str(tmp_path / "rel")]) == 0
    rows = list(csv.DictReader((tmp_path / "rel" / "log.csv").open()))
    assert float(rows[-1]["distill_loss"]) > 0
    assert read_checkpoint(tmp_path / "rel" / "last.pt")["card"]["training"]["teacher"]["matching"] == "relational"
    # a teacher folder without this tree's vectors is an error, not a silent run without distillation
    with pytest.raises(SystemExit, match="no teacher embeddings"):
        train.main([*args[:-4], "--no-imagenet", "--teacher", str(tmp_path / "empty"), "--out", str(tmp_path / "run2")])


def test_training_from_a_checkpoint_serves_and_refuses_weights_of_another_shape(tmp_path: Path) -> None:
    from PIL import Image

    from model.encoder import Preprocess

    torch.manual_seed(0)
    start = Encoder(EncoderConfig()).eval()
    save_checkpoint(tmp_path / "start.pt", start)
    faces = np.stack([np.asarray(Image.open(ORL / f"s{s}" / "1.pgm").convert("RGB").resize((112, 112)))
                      for s in range(1, 5)])
    # training from the checkpoint; the run's checkpoint loads for serving with its head
    args = ["--data", str(small_orl(tmp_path)), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--steps-per-epoch", "2", "-P", "3", "-K", "4", "--threads", "2", "--warmup-steps", "1",
            "--epochs", "1", "--init", str(tmp_path / "start.pt")]
    assert train.main(args) == 0
    trained = read_checkpoint(tmp_path / "run" / "last.pt")
    assert not torch.allclose(trained["state_dict"]["head.weight"], start.head.weight)  # it learned
    embedder, _ = load_encoder(tmp_path / "run" / "last.pt")
    out = embedder(faces)
    assert out.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the folded inference copy computes what the model computes
    model = Encoder(embedder.config).eval()
    model.load_state_dict(trained["state_dict"])
    with torch.no_grad():
        np.testing.assert_allclose(out, model(Preprocess(embedder.config)(faces)).numpy(), atol=1e-4)
    # a start whose weights do not fit the architecture its config names is refused in words
    state = {**start.state_dict(), "head.weight": torch.zeros(64, 1280)}
    torch.save({**read_checkpoint(tmp_path / "start.pt"), "state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        train.main([*args[:-1], str(tmp_path / "bad.pt"), "--out", str(tmp_path / "bad-run")])
