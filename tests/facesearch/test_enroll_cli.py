"""`facesearch enroll DIR`: bulk enrollment in-process and against a running server, resumable."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from PIL import Image

from model.dlib_resnet import DLIB_DAT
from model.train.import_dlib import dlib_models_dir, import_dlib
from tests.app.client import call
from tests.conftest import LFW

EXE = shutil.which("facesearch", path=str(Path(sys.executable).parent)) or "facesearch"
PEOPLE = ["Colin_Powell", "Tony_Blair", "Hugo_Chavez"]


def make_tree(root: Path) -> Path:
    for name in PEOPLE:
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(LFW / name / f"{name}_{i:04d}.jpg", root / name)
    (root / "Nobody").mkdir()
    Image.new("RGB", (120, 120), (128, 128, 128)).save(root / "Nobody" / "blank.png")
    return root


def run(*args: str, env: dict[str, str]) -> dict[str, int]:
    r = subprocess.run([EXE, "enroll", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    summary = next(ln for ln in r.stdout.splitlines() if ln.startswith("{"))
    return json.loads(summary)


def test_enroll_in_process_then_resume(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    env = {"FACESEARCH_DATA_DIR": str(tmp_path / "data")}
    assert run(str(tree), env=env) == {"enrolled": 6, "skipped": 0, "no_face": 1, "failed": 0}
    assert run(str(tree), env=env) == {"enrolled": 0, "skipped": 6, "no_face": 1, "failed": 0}
    # enrolled as the API enrolls: source crops kept, the audit names the command line
    con = sqlite3.connect(tmp_path / "data" / "gallery.db")
    try:
        assert con.execute("SELECT COUNT(*) FROM faces WHERE source IS NOT NULL").fetchone()[0] == 6
        assert {r[0] for r in con.execute("SELECT actor FROM audit WHERE event = 'enroll'")} == {"cli"}
    finally:
        con.close()
    # so a model cutting another chip re-embeds every face from them
    second = tmp_path / "second.pt"
    import_dlib(dlib_models_dir() / DLIB_DAT, second, chip="template")
    r = subprocess.run([EXE, "gallery", "reembed", "--checkpoint", str(second)], capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "re-embedded 6 faces" in r.stdout


def test_enroll_against_a_server(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree(tmp_path / "tree")
    (tree / "Nobody" / "blank.png").unlink()
    server = server_factory(tmp_path / "data")
    server.wait_ready()
    assert run(str(tree), "--url", server.url, env={}) == {"enrolled": 6, "skipped": 0, "no_face": 0, "failed": 0}
    assert run(str(tree), "--url", server.url, env={})["skipped"] == 6
    status, body = call(f"{server.url}/v1/identities")
    assert status == 200 and body["total"] == 3
