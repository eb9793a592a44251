"""A gallery outlives its encoder: enrolled through the server with an encoder-v2-like checkpoint (dlib's ResNet
imported as it is: MTCNN, dlib's 150-px chip, 128-d), upgraded to the shipped encoder v3 (YuNet, the 112-px template
chip, another dimension) from the stored source crops by `facesearch gallery reembed` SIGKILLed again and again,
searches answered by the old model and an identity deleted through the API while it is half done, and the run
finished by the server itself (FACESEARCH_REEMBED=auto)."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from model.dlib_resnet import DLIB_DAT
from model.embedder import load_encoder
from model.pipeline import embed_stored
from model.train.import_dlib import dlib_models_dir, import_dlib
from tests.app.client import call, quote
from tests.conftest import LFW
from tests.erasure import face_bytes, files_holding

PEOPLE = ["Colin_Powell", "Tony_Blair", "Gerhard_Schroeder", "Ariel_Sharon", "Hugo_Chavez", "Jean_Chretien"]


def db_count(db: Path, sql: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def test_reembed_resumes_after_kills_erases_and_switches(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    db = data / "gallery.db"
    old = tmp_path / "v2.pt"
    import_dlib(dlib_models_dir() / DLIB_DAT, old, chip="dlib5")
    old_model = load_encoder(old)[1]["model_version"]
    server = server_factory(data, FACESEARCH_CHECKPOINT=str(old))
    server.wait_ready()
    ids = {}
    for name in PEOPLE:
        status, body = call(f"{server.url}/v1/identities/{quote(name)}/faces", "POST",
                            files=[("image", (LFW / name / f"{name}_{k:04d}.jpg").read_bytes()) for k in (1, 2)])
        assert status == 201, body
        ids[name] = [f["face_id"] for f in body["faces"]]
    server.stop()
    total = 2 * len(PEOPLE)
    new_model = load_encoder()[1]["model_version"]  # the shipped encoder
    assert new_model != old_model

    # killed again and again, each time just after it committed a face, until half of them have their new vector
    cli = [sys.executable, "-m", "facesearch.cli", "gallery", "reembed", "--data-dir", str(data),
           "--batch", "1", "--report", str(tmp_path / "lost.json")]
    rnd = random.Random(0)
    progress = [0]
    for _ in range(30):
        if progress[-1] >= total // 2:
            break
        proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if db_count(db, "SELECT COUNT(*) FROM reembedding") > progress[-1]:
                time.sleep(rnd.uniform(0.0, 0.02))
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(db_count(db, "SELECT COUNT(*) FROM reembedding"))
        assert db_count(db, "SELECT COUNT(*) FROM generations") == 0, f"a run finished before it was killed: {progress}"
        assert progress[-1] >= progress[-2], f"a killed run lost committed progress: {progress}"
    assert total // 2 <= progress[-1] < total and len(progress) > 2, progress
    assert db_count(db, "SELECT COUNT(*) FROM meta WHERE key = 'reembed_target'") == 1

    # half done: the old model still serves; an identity deleted now leaves no byte of either model behind
    victim = next(n for n in PEOPLE if db_count(db, f"SELECT COUNT(*) FROM reembedding WHERE face_id = {ids[n][0]}"))
    stored = face_bytes(db, ids[victim])
    assert any(k.endswith("/reembedding") for k in stored)
    assert set(files_holding(data, stored)) == set(stored), "the scan must first find what it later asserts gone"
    server = server_factory(data, FACESEARCH_CHECKPOINT=str(old))
    server.wait_ready()
    status, info = call(f"{server.url}/v1/info")
    assert info["gallery"]["reembed"]["target_model"] == new_model and info["gallery"]["generation"] == 0
    status, body = call(f"{server.url}/v1/search", "POST",
                        files=[("image", (LFW / "Tony_Blair" / "Tony_Blair_0003.jpg").read_bytes())])
    assert status == 200 and body["model"] == old_model and body["faces"][0]["identity"] == "Tony_Blair", body
    status, body = call(f"{server.url}/v1/identities/{quote(victim)}", "DELETE")
    assert status == 200 and body["faces_deleted"] == 2
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert files_holding(data, stored) == {}

    # the server with the shipped encoder finishes the run before it is ready
    server = server_factory(data, FACESEARCH_REEMBED="auto")
    server.wait_ready(timeout=300)
    log = server.log_path.read_text()
    assert "re-embedding the gallery" in log and f"generation 1, model {new_model}" in log
    assert f"re-embedding: {total - 2} / {total - 2} faces" in log
    status, info = call(f"{server.url}/v1/info")
    assert info["gallery"]["model_version"] == new_model and info["gallery"]["generation"] == 1
    assert info["gallery"]["faces"] == total - 2 and info["gallery"]["reembed"] is None
    for name in PEOPLE:
        if name == victim:
            continue
        status, body = call(f"{server.url}/v1/search", "POST",
                            files=[("image", (LFW / name / f"{name}_0003.jpg").read_bytes())])
        assert status == 200 and body["model"] == new_model and body["faces"][0]["identity"] == name, (name, body)
    status, audit = call(f"{server.url}/v1/audit?limit=1000")
    events = [e["event"] for e in audit["items"]]
    assert events.count("reembed_started") == 1, "a resumed run must not start over"
    assert events[-1] == "reembed" and audit["items"][-1]["detail"]["faces"] == total - 2
    server.stop()
    assert sorted(p.name for p in (data / "index").iterdir()) == ["g1"]  # the old generation removed
    assert files_holding(data, stored) == {}

    # every vector is what the shipped model makes from the face's source crop, whichever run embedded it
    embedder, _ = load_encoder()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, embedding, model_version, source, source_geometry, thumbnail FROM faces").fetchall()
    con.close()

    class Crop:
        def __init__(self, r: tuple) -> None:  # type: ignore[type-arg]
            import json

            self.source, self.source_geometry, self.chip = r[3], json.loads(r[4]), r[5]

    again = embed_stored(embedder, [Crop(r) for r in rows])
    for r, v in zip(rows, again, strict=True):
        assert r[2] == new_model and v is not None
        assert np.abs(np.frombuffer(r[1], np.float32) - v).max() < 1e-5, r[0]
