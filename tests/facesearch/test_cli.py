"""The command line as a newcomer meets it: search and verify (in-process and against a server), and one plain
line with exit status 2 instead of a traceback for the usual mistakes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from facesearch import cli
from tests.conftest import LFW, free_port

PEOPLE = ["Colin_Powell", "Tony_Blair"]


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LFW people enrolled by `facesearch enroll` (photos 1-2 each)."""
    root = tmp_path_factory.mktemp("cli")
    for name in PEOPLE:
        (root / "tree" / name).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(LFW / name / f"{name}_{i:04d}.jpg", root / "tree" / name)
    assert cli.main(["enroll", str(root / "tree"), "--data-dir", str(root / "data")]) == 0
    return root / "data"


def photo(name: str, i: int) -> str:
    return str(LFW / name / f"{name}_{i:04d}.jpg")


def test_search_in_process(gallery_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    stranger = photo("Serena_Williams", 1)
    assert cli.main(["search", photo("Colin_Powell", 3), stranger, "--data-dir", str(gallery_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{photo('Colin_Powell', 3)}\tmatch\tColin_Powell\tdistance ")
    assert lines[1].startswith(f"{stranger}\tunknown\t-\tdistance ")


def test_verify_in_process_exit_status_is_the_answer(gallery_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", photo("Tony_Blair", 3), photo("Tony_Blair", 4)]) == 0
    assert capsys.readouterr().out.startswith("same person\tdistance ")
    assert cli.main(["verify", photo("Tony_Blair", 3), photo("Colin_Powell", 3)]) == 1
    assert capsys.readouterr().out.startswith("different people\t")
    assert cli.main(["verify", photo("Tony_Blair", 5), "--identity", "Tony_Blair", "--data-dir",
                     str(gallery_dir)]) == 0
    assert cli.main(["verify", photo("Tony_Blair", 5), "--identity", "Nobody", "--data-dir", str(gallery_dir)]) == 2
    assert "'Nobody' not found" in capsys.readouterr().err


def test_search_and_verify_against_a_server(gallery_dir: Path, tmp_path: Path, server_factory,  # type: ignore[no-untyped-def]
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(gallery_dir, data)
    server = server_factory(data, FACESEARCH_API_KEYS="k1")
    server.wait_ready()
    url = ["--url", server.url, "--api-key", "k1"]
    capsys.readouterr()
    assert cli.main(["search", photo("Colin_Powell", 4), *url]) == 0
    assert "\tmatch\tColin_Powell\t" in capsys.readouterr().out
    assert cli.main(["verify", photo("Colin_Powell", 4), "--identity", "Colin_Powell", *url]) == 0
    assert cli.main(["search", photo("Colin_Powell", 4), "--url", server.url, "--api-key", "wrong"]) == 1
    assert "missing or invalid API key" in capsys.readouterr().err


def test_usual_mistakes_answer_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "tree" / "someone").mkdir(parents=True)
    shutil.copy(photo("Colin_Powell", 1), tmp_path / "tree" / "someone")
    cases = [
        (["enroll", str(tmp_path / "missing")], "is not a folder"),
        (["enroll", str(tmp_path / "tree"), "--url", down], f"cannot reach the FaceSearch server at {down}"),
        (["search", photo("Colin_Powell", 1), "--url", down], "cannot reach the FaceSearch server"),
        (["search", str(tmp_path / "nope.jpg")], "no such file"),
        (["search", photo("Colin_Powell", 1), "--data-dir", str(tmp_path / "empty")], "no gallery in"),
        (["verify", photo("Colin_Powell", 1), str(tmp_path / "nope.jpg")], "no such file"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "empty").exists()
    # a training command without the train extra: which package, and how to get it
    loaded = [m for m in sys.modules if m.split(".")[0] == "pytorch_metric_learning"]
    for module in [*loaded, "pytorch_metric_learning"]:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed, whatever imported it before
    monkeypatch.delitem(sys.modules, "model.train.train", raising=False)
    assert cli.main(["train", "--data", str(tmp_path / "tree"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "needs the Python package 'pytorch_metric_learning'" in err and "pip install 'facesearch[train]'" in err
