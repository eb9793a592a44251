"""The honest 'unknown': with many people enrolled, strangers are matched at about the target FPIR."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from model.train.lfw import parse_folds, people_in_folds, read_pairs
from tests.conftest import LFW


def test_strangers_match_at_about_the_target_rate(data_dir: Path) -> None:
    # people the encoder never saw (the held-out folds), each with at least one photo
    held = sorted(people_in_folds(read_pairs(LFW.parent / "pairs.txt"), parse_folds("1-2")))
    enrolled, strangers = held[0::2][:120], held[1::2][:120]
    fpir = 0.05
    with TestClient(create_app(Settings(data_dir=data_dir, search_fpir=fpir))) as c:
        for name in enrolled:
            data = (LFW / name / f"{name}_0001.jpg").read_bytes()
            r = c.post(f"/v1/identities/{name}/faces", files={"image": ("a.jpg", data, "image/jpeg")},
                       data={"face": "largest"})
            assert r.status_code in (201, 422), r.text
        n_enrolled = c.get("/v1/info").json()["gallery"]["faces"]
        assert n_enrolled >= 110
        false_matches = probes = 0
        for name in strangers:
            data = (LFW / name / f"{name}_0001.jpg").read_bytes()
            body = c.post("/v1/search", files={"image": ("a.jpg", data, "image/jpeg")}, data={"max_faces": "1"}).json()
            if not body["faces"]:
                continue
            probes += 1
            false_matches += body["faces"][0]["decision"] == "match"
            assert body["threshold"]["target_fpir"] == fpir
    assert probes >= 110
    # binomial: with p = 0.05 and ~120 probes, more than 15 false matches would be a > 3-sigma miss
    assert false_matches <= 15, f"{false_matches} of {probes} strangers matched (target FPIR {fpir})"
