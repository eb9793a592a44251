"""`facesearch photos index DIR`: a folder of photos indexed in-process and against a server, resumable (a second
run skips what the first indexed), with a summary; photos without a face and unreadable files are counted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facesearch import cli
from tests.app.client import call
from tests.conftest import LFW
from tests.helpers import two_face_photo


def library(root: Path) -> Path:
    """Four readable photos (one of two people, one of nobody) in nested folders, and one broken file."""
    (root / "trip" / "day1").mkdir(parents=True)
    shutil.copy(LFW / "Colin_Powell" / "Colin_Powell_0001.jpg", root / "trip" / "day1" / "a.jpg")
    shutil.copy(LFW / "Tony_Blair" / "Tony_Blair_0001.jpg", root / "trip" / "b.jpg")
    (root / "trip" / "c.jpg").write_bytes(two_face_photo((LFW / "Colin_Powell" / "Colin_Powell_0002.jpg").read_bytes(),
                                                         (LFW / "Serena_Williams" / "Serena_Williams_0001.jpg")
                                                         .read_bytes()))
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 140, 200)).save(root / "sky.png")
    (root / "broken.jpg").write_bytes(b"not a photo at all")
    return root


def summary(out: str) -> dict[str, float]:
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_index_a_folder_in_process_then_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = library(tmp_path / "photos")
    data = ["--data-dir", str(tmp_path / "data")]
    assert cli.main(["photos", "index", str(root), "--album", "trip", *data]) == 1  # the broken file is an error
    first = summary(capsys.readouterr().out)
    assert first["photos"] == 4 and first["no_face"] == 1 and first["errors"] == 1 and first["skipped"] == 0
    assert first["faces"] >= 4 and first["photos_per_s"] > 0
    assert cli.main(["photos", "index", str(root), "--album", "trip", *data]) == 1
    again = summary(capsys.readouterr().out)
    assert again["skipped"] == 4 and again["photos"] == 0 and again["faces"] == 0


def test_index_a_folder_against_a_server(tmp_path: Path, server_factory,  # type: ignore[no-untyped-def]
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = library(tmp_path / "photos")
    (root / "broken.jpg").unlink()
    server = server_factory(tmp_path / "data", FACESEARCH_API_KEYS="k1")
    server.wait_ready()
    url = ["--url", server.url, "--api-key", "k1"]
    assert cli.main(["photos", "index", str(root), "--album", "trip", *url]) == 0
    first = summary(capsys.readouterr().out)
    assert first["photos"] == 4 and first["no_face"] == 1 and first["errors"] == 0
    listed = call(f"{server.url}/v1/photos?album=trip", headers={"X-API-Key": "k1"})[1]
    assert listed["total"] == 4
    assert {p["metadata"]["path"] for p in listed["items"]} == {"trip/day1/a.jpg", "trip/b.jpg", "trip/c.jpg",
                                                                "sky.png"}
    assert cli.main(["photos", "index", str(root), *url]) == 0
    assert summary(capsys.readouterr().out)["skipped"] == 4
    assert cli.main(["photos", "index", str(root), "--url", server.url, "--api-key", "wrong"]) == 1
    assert cli.main(["photos", "index", str(tmp_path / "nowhere"), *url]) == 2
