"""Open-set search through the API on people no encoder here trained on, beside dlib's pipeline, same photos.

    python bench/openset.py --celeba DIR/img_align_celeba [--checkpoint PATH] [--people N] [--json PATH]

The people are bench/celeba_heldout.txt (CelebA identities kept out of training with ``facesearch train
--exclude-people``; dlib's author trained on other sets) less bench/celeba_calibration.txt (the last 100, strangers
the open-set table is calibrated on, never reported here) and less bench/celeba_heldout_trained.txt (the held-out
people who are someone the encoder trained on under another name, in LFW or elsewhere in CelebA: found by
bench/overlap.py): the first ``--people`` (default: half of them) are enrolled with three photos each through ``POST
/v1/identities/{id}/faces``, up to three further photos of each are searched (``POST /v1/search``, default threshold:
FPIR 0.01), and every photo of the next ``--people`` (strangers, never enrolled) is searched. Reported: rank-1 (the
right person is the first candidate), the share of genuine searches answered ``match`` with the right person, and the
share of strangers accepted (with its 95% Wilson interval). Beside the service's decisions, on the same nearest
distances: what the threshold of the first calibration (LFW's impostor histogram and independence, used by cards
without an ``openset`` table) would have decided, and rank-1 when an identity scores by the mean of its two nearest
faces instead of its nearest one. dlib: its own pipeline (HOG, 5-point chip, ResNet) on the same photos, nearest
enrolled photo, its documented threshold 0.6 on its raw vectors, and at a threshold calibrated like the service's to
accept 1% of strangers: the distance under which 1% of the calibration people's photos (bench/celeba_calibration.txt
less the people trained on, as the service's calibration has them; never reported) find their nearest enrolled photo,
in this gallery. The celeba-more tree comes from ../shared/datasets/celeba-more (README there).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import LOCAL, celeba_people, report  # noqa: E402


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - half) / (1 + z * z / n)), float((centre + half) / (1 + z * z / n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--celeba", type=Path, required=True, help="celeba-more's img_align_celeba folder")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--people", type=int, help="enrolled, and as many strangers (default: half of the people)")
    p.add_argument("--no-dlib", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from fastapi.testclient import TestClient

    from app.main import create_app
    from facesearch.settings import Settings
    from model.calibration import Calibration

    ids, calibration = celeba_people()
    people = len(ids) // 2 if a.people is None else a.people
    if 2 * people > len(ids):
        p.error(f"--people at most {len(ids) // 2}: {len(ids)} held-out people are neither calibration strangers nor "
                "trained on")
    enrolled, strangers = ids[:people], ids[people : 2 * people]
    photos = {i: sorted((a.celeba / i).glob("*.jpg")) for i in enrolled + strangers}
    r: dict[str, Any] = {"enrolled_people": len(enrolled), "stranger_people": len(strangers)}
    with tempfile.TemporaryDirectory() as tmp, TestClient(create_app(
            Settings(data_dir=Path(tmp) / "data", checkpoint=a.checkpoint)), base_url=LOCAL) as c:
        r["model"] = c.get("/v1/info").json()["model"]["model_version"]
        refused = 0
        for i in enrolled:
            files = [("image", (f.name, f.read_bytes(), "image/jpeg")) for f in photos[i][:3]]
            resp = c.post(f"/v1/identities/{i}/faces", files=files, data={"face": "largest"})
            refused += resp.status_code != 201
        r["enrollments_refused"] = refused

        info = c.get("/v1/info").json()
        faces_enrolled = info["gallery"]["faces"]
        card = c.app.state.fs.pipeline.card  # type: ignore[attr-defined]
        formula = Calibration({**card, "openset": None}).search_threshold(0.01, faces_enrolled)[0]

        def search(f: Path) -> dict[str, Any] | None:
            body = c.post("/v1/search", files={"image": (f.name, f.read_bytes(), "image/jpeg")},
                          data={"max_faces": "1"}).json()
            return body["faces"][0] if body.get("faces") else None

        first = matched = probes = no_face = 0
        for i in enrolled:
            for f in photos[i][3:6]:
                face = search(f)
                probes += 1
                if face is None:
                    no_face += 1
                    continue
                first += face["candidates"][0]["identity"] == i
                matched += face["decision"] == "match" and face["identity"] == i
        accepted = stranger_probes = formula_accepted = 0
        for i in strangers:
            for f in photos[i]:
                face = search(f)
                if face is None:
                    continue
                stranger_probes += 1
                accepted += face["decision"] == "match"
                formula_accepted += face["candidates"][0]["distance"] <= formula
        f = photos[strangers[0]][0]
        threshold = c.post("/v1/search", files={"image": (f.name, f.read_bytes(), "image/jpeg")}).json()["threshold"]
    low, high = wilson(accepted, stranger_probes)
    r.update({"faces_enrolled": faces_enrolled, "threshold": threshold, "probes": probes,
              "probes_without_face": no_face, "rank1": first / probes,
              "genuine_match_rate": matched / probes, "stranger_probes": stranger_probes,
              "strangers_accepted": accepted / stranger_probes, "strangers_accepted_95": [low, high],
              "formula_threshold": formula, "formula_strangers_accepted": formula_accepted / stranger_probes})
    if not a.no_dlib:
        from model.train.teacher import dlib_embedding

        gal, who = [], []
        for i in enrolled:
            for f in photos[i][:3]:
                e, found = dlib_embedding(f)
                if found:
                    gal.append(e)
                    who.append(i)
        g, who_arr = np.stack(gal), np.array(who)

        def nearest(f: Path) -> tuple[str, float] | None:
            e, found = dlib_embedding(f)
            if not found:
                return None
            d = np.linalg.norm(g - e, axis=1)
            return str(who_arr[d.argmin()]), float(d.min())

        genuine = [(i, nearest(f)) for i in enrolled for f in photos[i][3:6]]  # None: no face found

        def matched_at(threshold: float) -> float:
            return sum(h is not None and h[0] == i and h[1] < threshold for i, h in genuine) / len(genuine)

        d_hits = [h for i in strangers for f in photos[i] if (h := nearest(f)) is not None]
        # dlib also at a threshold calibrated like ours, to accept 1% of strangers: the calibration people's photos
        # (never reported) searched in this gallery; the distance under which 1% of their nearest faces fall
        held = [h[1] for i in sorted(calibration) for f in sorted((a.celeba / i).glob("*.jpg"))
                if (h := nearest(f)) is not None]
        tuned = float(np.quantile(held, 0.01))
        tuned_accepted = sum(h[1] < tuned for h in d_hits)
        r.update({"dlib_rank1": sum(h is not None and h[0] == i for i, h in genuine) / len(genuine),
                  "dlib_genuine_match_rate": matched_at(0.6), "dlib_stranger_probes": len(d_hits),
                  "dlib_strangers_accepted": sum(h[1] < 0.6 for h in d_hits) / len(d_hits),
                  "dlib_calibration_probes": len(held), "dlib_calibrated_threshold": tuned,
                  "dlib_calibrated_genuine_match_rate": matched_at(tuned),
                  "dlib_calibrated_strangers_accepted": tuned_accepted / len(d_hits),
                  "dlib_calibrated_strangers_accepted_95": list(wilson(tuned_accepted, len(d_hits)))})
    report(r, a.json, digits=4)


if __name__ == "__main__":
    main()
