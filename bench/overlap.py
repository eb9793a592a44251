"""Which test and calibration people are also people the encoder was trained on, under another name in another data
set: CFP's people are celebrities, and many of them are in LFW or CelebA too.

    python bench/overlap.py --cfp ../cfp/cfp-dataset --chips ../cache/aligned/template112-yunet \
        --trained-list bench/celeba_heldout_trained.txt --json bench/results/overlap.json

For CFP split 8 (people 351-400: the open-set calibration's strangers), splits 9-10 (401-500: the CFP figures'
test people) and CelebA's held-out people (``bench/celeba_heldout.txt``: the open-set bench's and the calibration's),
each person's frontal photos against the training sets' people (the card's training data: LFW outside folds 1-2,
CelebA outside ``bench/celeba_heldout.txt``), judged as the calibration judges its strangers
(``model.train.openset.trained_on``: nine in ten pairs of their photos within the verification threshold). CFP
splits 6-7 (251-350) were trained on as themselves and are not asked. ``--trained-list`` writes the held-out CelebA
people found (``bench/openset.py`` leaves them out). The CFP photos are aligned into ``CHIPS/cfp-overlap``
(``facesearch align``'s chips); ``CHIPS/lfw-deepfunneled`` and ``CHIPS/img_align_celeba`` must be there (README
"Train and evaluate"). Splits 1-5 are never read. Then CFP 9-10's two protocols through the serving pipeline (as
``facesearch evaluate-cfp``), the genuine pairs of the people also trained on and of those not each scored beside
every impostor pair: what the overlap is worth to the CFP figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import command, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LFW_PAIRS = ROOT.parent / "shared" / "datasets" / "lfw" / "pairs.txt"
SPLITS = {"calibration strangers (CFP split 8)": [8], "CFP test people (splits 9-10)": [9, 10]}
CELEBA = "held-out CelebA people (bench/celeba_heldout.txt)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfp", type=Path, required=True, help="the CFP dataset's root")
    p.add_argument("--chips", type=Path, required=True, help="the folder of `facesearch align` outputs")
    p.add_argument("--cache", type=Path, default=ROOT.parent / "cache" / "openset", help="embeddings, per folder")
    p.add_argument("--trained-list", type=Path, help="write the held-out CelebA people also trained on here")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    ran = machine()

    from model.embedder import SHIPPED_CHECKPOINT, load_encoder
    from model.train.align import align_tree
    from model.train.cfp import Cfp, protocol_metrics, serving_embeddings
    from model.train.lfw import people_in_folds, read_pairs
    from model.train.openset import Chips, only, trained_on
    from model.train.train import read_people

    embedder, card = load_encoder(SHIPPED_CHECKPOINT)
    version, threshold = str(card["model_version"]), float(card["thresholds"]["verification"])
    cfp = Cfp(a.cfp)
    people = sorted({p for splits in SPLITS.values() for p in cfp.people(splits)})
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "cfp-overlap"
        for person in people:  # frontal photos only: the same-person rule judges on them
            for n in range(1, 11):
                dst = tree / f"cfp{person:03d}" / f"frontal_{n:02d}.jpg"
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to((a.cfp / cfp.photo(person, "frontal", n)).resolve())
        align_tree(tree, a.chips / "cfp-overlap", embedder.config)
    asked = Chips.load(a.chips / "cfp-overlap", embedder, version, a.cache)
    lfw_test = people_in_folds(read_pairs(LFW_PAIRS), [1, 2])
    celeba_test = read_people(ROOT / "bench" / "celeba_heldout.txt")
    celeba = Chips.load(a.chips / "img_align_celeba", embedder, version, a.cache)
    trained = [Chips.load(a.chips / "lfw-deepfunneled", embedder, version, a.cache, exclude=lfw_test),
               celeba.rows(~np.isin(celeba.people, celeba_test))]
    groups = {label: only(asked, [f"cfp{p:03d}" for p in cfp.people(splits)]) for label, splits in SPLITS.items()}
    groups[CELEBA] = only(celeba, celeba_test)
    rows = []
    for label, group in groups.items():
        found = trained_on(group, trained, threshold)
        rows.append({"set": label, "people": len(set(group.people.tolist())), "photos": len(group),
                     "also_trained_on": len(found), "who": found})
        print(f"{label}: {len(found)} of {len(set(group.people.tolist()))} people also among the training people",
              flush=True)
    if a.trained_list:
        found = rows[-1]["who"]
        a.trained_list.write_text(
            "# CelebA people of bench/celeba_heldout.txt (never trained on as themselves) who are the same person as\n"
            "# someone in the training sets (LFW outside folds 1-2, CelebA outside the held-out people): written by\n"
            f"# {command()}\n# at {ran.get('git_commit')}; bench/openset.py leaves them out\n"
            + "".join(f"{p}  # {', '.join(found[p])}\n" for p in celeba_test if p in found))
    # CFP 9-10's protocols as `facesearch evaluate-cfp` measures them (the serving pipeline), with the genuine pairs
    # of the people also trained on and of those not, each beside every impostor pair: what the overlap is worth
    test = rows[1]
    trained_people = {int(p[3:]) for p in test["who"]}
    protocols = {name: cfp.pairs(name, SPLITS["CFP test people (splits 9-10)"]) for name in ("FF", "FP")}
    files = sorted({f for pairs in protocols.values() for q in pairs for f in q.files})
    emb, _ = serving_embeddings(cfp.root, files, None, None)
    by_group = {}
    for name, pairs in protocols.items():
        impostors = [q for q in pairs if not q.same]
        for group, keep in (("also trained on", True), ("never trained on", False)):
            genuine = [q for q in pairs if q.same and (int(Path(q.files[0]).parts[-3]) in trained_people) == keep]
            by_group[f"{name}, genuine pairs of people {group}"] = protocol_metrics(genuine + impostors, emb)
    test["cfp_protocols"] = by_group
    for k, v in by_group.items():
        print(f"{k}: accuracy {v['accuracy']:.4f}, AUC {v['auc']:.4f} over {v['pairs']} pairs", flush=True)
    out = {"command": command(), **ran, "model_version": version, "threshold": threshold,
           "rule": "model.train.openset.trained_on on frontal photos: nine in ten pairs within the verification "
                   "threshold", "trained_on": {c.name: f"{len(c)} photos of {len(set(c.people.tolist()))} people"
                                               for c in trained},
           "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
