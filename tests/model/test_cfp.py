"""CFP's protocol files read as the paper defines them, with the outside-check splits (people 001-250) refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.train.cfp import Cfp, parse_splits, protocol_metrics


def make_cfp(root: Path, people: range) -> Path:
    """A CFP tree in the DR-GAN copy's layout (train/ up to 450, test/ after) with one pair list line per photo."""
    lines = {"F": [], "P": []}
    for person in people:
        layout = "train" if person <= 450 else "test"
        for pose, key, count in (("frontal", "F", 10), ("profile", "P", 4)):
            for n in range(1, count + 1):
                path = root / "Data" / "Images" / layout / f"{person:03d}" / pose / f"{n:02d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8)).save(path)
                lines[key].append(f"../Data/Images/{person:03d}/{pose}/{n:02d}.jpg")
    for key, name in (("F", "Pair_list_F.txt"), ("P", "Pair_list_P.txt")):
        (root / "Protocol").mkdir(parents=True, exist_ok=True)
        # numbering as in CFP: person p's photos follow those of p - 1 (here starting at the first person given)
        (root / "Protocol" / name).write_text("".join(f"{i + 1} {ln}\n" for i, ln in enumerate(lines[key])))
    return root


def test_splits_of_the_outside_check_are_refused() -> None:
    assert parse_splits("9-10") == [9, 10]
    assert parse_splits("6,7,8") == [6, 7, 8]
    for text in ("1", "5-6", "1-10"):
        with pytest.raises(SystemExit, match="outside check"):
            parse_splits(text)


def test_pairs_map_to_the_copy_layout_and_stay_in_their_split(tmp_path: Path) -> None:
    root = make_cfp(tmp_path / "cfp", range(401, 501))
    split = root / "Protocol" / "Split" / "FP" / "09"
    split.mkdir(parents=True)
    # frontal number 1 is person 401's first frontal; profile 5 is person 402's first profile
    (split / "same.txt").write_text("1,1\n11,5\n")
    (split / "diff.txt").write_text("1,5\n")
    pairs = Cfp(root).pairs("FP", [9])
    assert [p.same for p in pairs] == [True, True, False]
    assert pairs[0].files == ("Data/Images/train/401/frontal/01.jpg", "Data/Images/train/401/profile/01.jpg")
    assert pairs[2].files[1] == "Data/Images/train/402/profile/01.jpg"
    assert Cfp(root).photo(480, "frontal", 3) == "Data/Images/test/480/frontal/03.jpg"
    with pytest.raises(ValueError, match="outside check"):
        Cfp(root).photo(250, "frontal", 1)


def test_a_photo_without_a_face_decides_its_pairs_different(tmp_path: Path) -> None:
    from model.train.cfp import CfpPair

    e = np.eye(4, dtype=np.float32)
    emb = {"a": e[0], "b": e[0], "c": e[1], "d": None}
    pairs = [CfpPair(9, True, ("a", "b")), CfpPair(9, False, ("a", "c")), CfpPair(10, True, ("a", "b")),
             CfpPair(10, True, ("a", "d")), CfpPair(10, False, ("b", "c"))]
    m = protocol_metrics(pairs, emb)
    assert m["pairs_with_a_missing_face"] == 1
    assert m["per_split"] == {9: 1.0, 10: pytest.approx(2 / 3)}
