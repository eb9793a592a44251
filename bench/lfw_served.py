"""LFW folds 1-2 (people never trained on) as the service answers: all 1,200 pairs, each photo through the serving
pipeline (the face nearest the centre), decided at the card's verification threshold; beside the figures the card
states (its training run's accuracy over the same pairs, each fold's threshold fitted on the other; and its
accuracy at that threshold).

    python bench/lfw_served.py [--json PATH]

The test suite holds the same figure to within half a point of the card
(tests/model/test_shipped.py::test_shipped_weights_keep_their_lfw_accuracy_through_the_serving_pipeline)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import ROOT, report  # noqa: E402

LFW = ROOT.parent / "shared" / "datasets" / "lfw" / "lfw-deepfunneled"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw", type=Path, default=LFW, help="the LFW photo tree (pairs.txt beside it)")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from model.pipeline import FacePipeline
    from model.train.served import lfw_as_served

    card = json.loads((ROOT / "model" / "weights" / "model_card.json").read_text())
    pipeline = FacePipeline(threads=2)
    try:
        t = time.perf_counter()
        served = lfw_as_served(pipeline, a.lfw, (1, 2))
        seconds = time.perf_counter() - t
    finally:
        pipeline.close()
    report({"set": "lfw folds 1-2", "model_version": card["model_version"], "pairs": served.pairs,
            "photos": served.photos, "without_face": served.without_face, "threshold": served.threshold,
            "accuracy_as_served": served.accuracy,
            "card_accuracy": card["evaluation"]["accuracy"],
            "card_accuracy_at_threshold": card["thresholds"]["verification_accuracy"],
            "seconds": round(seconds, 1)}, a.json, digits=4)


if __name__ == "__main__":
    main()
