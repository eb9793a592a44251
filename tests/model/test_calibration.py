"""Search thresholds read from a card's measured open-set table, and the measurement itself
(``facesearch calibrate-openset``) on vectors whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from model.calibration import Calibration
from model.train.openset import Chips, nearest, openset_table, stranger_table, strictest, trained_on, twins

TABLE = {"gallery_faces": [100, 1000, 10000], "fpir": [0.001, 0.01, 0.1],
         "thresholds": [[0.50, 0.56, 0.64], [0.46, 0.52, 0.60], [0.42, 0.48, 0.56]]}


def card(verification: float = 0.6, table: dict | None = TABLE) -> dict:
    return {"thresholds": {"verification": verification}, "openset": table}


def test_measured_points_are_returned_as_measured() -> None:
    cal = Calibration(card())
    assert cal.has_openset
    for i, n in enumerate(TABLE["gallery_faces"]):
        for j, f in enumerate(TABLE["fpir"]):
            t, expected = cal.search_threshold(f, n)
            assert t == pytest.approx(min(TABLE["thresholds"][i][j], 0.6))
            assert expected == pytest.approx(f)


def test_between_and_beyond_the_measured_sizes_it_follows_log_size() -> None:
    cal = Calibration(card())
    assert cal.search_threshold(0.01, 316)[0] == pytest.approx(0.54, abs=1e-3)  # halfway in log size
    assert cal.search_threshold(0.01, 100_000)[0] == pytest.approx(0.44)  # extended along 1k-10k
    assert cal.search_threshold(0.01, 10)[0] == pytest.approx(0.60)  # and below 100
    assert cal.search_threshold(0.01, 0)[0] == cal.search_threshold(0.01, 1)[0]  # an empty gallery is one face


def test_rates_interpolate_in_log_and_hold_at_the_ends() -> None:
    cal = Calibration(card())
    assert cal.search_threshold(np.sqrt(0.001 * 0.01), 1000)[0] == pytest.approx(0.49)
    t, expected = cal.search_threshold(1e-5, 1000)  # below the measured rates: the strictest measured
    assert (t, expected) == (pytest.approx(0.46), pytest.approx(0.001))
    t, expected = cal.search_threshold(0.5, 1000)
    assert (t, expected) == (pytest.approx(0.60), pytest.approx(0.1))


def test_never_looser_than_verification() -> None:
    cal = Calibration(card(verification=0.5))
    assert cal.search_threshold(0.1, 100)[0] == 0.5


def test_a_card_without_the_table_uses_the_independence_formula() -> None:
    edges = np.linspace(0, 2, 201)
    counts = np.histogram(np.random.default_rng(0).normal(1.2, 0.15, 100_000), edges)[0]
    cal = Calibration({"thresholds": {"verification": 0.6}, "openset": None,
                       "distributions": {"bin_edges": edges.tolist(), "impostor_counts": counts.tolist()}})
    assert not cal.has_openset
    t, expected = cal.search_threshold(0.01, 1000)
    assert expected == pytest.approx(1 - (1 - cal.far_at(t)) ** 1000)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_measured_threshold_keeps_its_rate_on_new_strangers_and_galleries() -> None:
    rng = np.random.default_rng(1)
    probes, pool = unit(rng.normal(size=(4000, 8))), unit(rng.normal(size=(20000, 8)))
    table = openset_table(probes, pool, [100, 1000], (0.01, 0.1))
    cal = Calibration(card(verification=2.0, table=table))
    fresh_probes, fresh_pool = unit(rng.normal(size=(4000, 8))), unit(rng.normal(size=(20000, 8)))
    for n in (100, 1000):
        for f in (0.01, 0.1):
            t, _ = cal.search_threshold(f, n)
            rates = [np.mean(nearest(fresh_probes, fresh_pool[rng.choice(len(fresh_pool), n, replace=False)]) <= t)
                     for _ in range(5)]
            assert np.mean(rates) == pytest.approx(f, rel=0.35), (n, f, rates)
    big, small = cal.search_threshold(0.01, 1000)[0], cal.search_threshold(0.01, 100)[0]
    assert big < small  # more faces, more chances: a stricter threshold


def test_a_person_in_both_sets_is_found_by_their_photos() -> None:
    rng = np.random.default_rng(2)
    people = unit(rng.normal(size=(40, 32)))
    photos = lambda i, k: unit(people[i] + rng.normal(scale=0.05, size=(k, 32)))  # noqa: E731
    strangers = Chips.of(np.concatenate([photos(i, 6) for i in range(10)]),
                         [f"s{i}" for i in range(10) for _ in range(6)])
    fillers = Chips.of(np.concatenate([photos(i, 3) for i in (3, 7, *range(10, 40))]),
                       [f"f{i}" for i in (3, 7, *range(10, 40)) for _ in range(3)])
    assert twins(strangers, fillers, threshold=0.5) == {"s3": ["f3"], "s7": ["f7"]}
    assert twins(strangers, fillers, threshold=0.05) == {}  # the same people, photos too far apart


def test_a_stranger_trained_on_is_judged_on_frontal_photos_and_left_out_of_the_strangers() -> None:
    """Profiles lie beyond a frontal-fitted threshold: judged on all photos, a stranger the encoder trained on under
    another name (a filler) would stay a stranger. Once found, they leave the strangers; the galleries keep every
    filler."""
    rng = np.random.default_rng(3)
    person, other = unit(rng.normal(size=(2, 32)))
    frontals = unit(person + rng.normal(scale=0.05, size=(10, 32)))
    profiles = unit(rng.normal(size=(4, 32)))  # far from everything, as a profile is from frontal photos
    files = [f"cfp351/frontal_{i:02d}.png" for i in range(10)] + [f"cfp351/profile_{i:02d}.png" for i in range(4)]
    files += [f"cfp352/frontal_{i:02d}.png" for i in range(10)]
    strangers = Chips(np.concatenate([frontals, profiles, unit(other + rng.normal(scale=0.05, size=(10, 32)))]),
                      np.array(["cfp351"] * 14 + ["cfp352"] * 10), files, "cfp")
    fillers = Chips.of(np.concatenate([unit(person + rng.normal(scale=0.05, size=(3, 32))),
                                       unit(rng.normal(size=(30, 32)))]), ["him"] * 3 + [f"f{i}" for i in range(30)])
    fillers.name = "lfw"
    assert twins(strangers, fillers, threshold=0.5) == {}  # 10 of 14 photos: under nine in ten
    trained = trained_on(strangers, [fillers], threshold=0.5)
    assert trained == {"cfp351": ["lfw/him"]}
    table = stranger_table(strangers, fillers.embeddings, [fillers], trained, sizes=[10, 33])
    assert table["strangers"] == "10 photos of 1 people (cfp); 1 people also trained on left out"
    assert table["trained_on_left_out"] == {"cfp351": ["lfw/him"]}
    assert table["gallery_faces"] == [10, 33]


def test_the_shipped_table_keeps_the_promise_for_every_population() -> None:
    a = {"gallery_faces": [100, 1000], "fpir": [0.01, 0.1], "thresholds": [[1.1, 1.2], [0.9, 1.0]], "draws": [5, 1],
         "strangers": "a", "fillers": {}}
    b = {**a, "thresholds": [[1.05, 1.25], [0.95, 0.98]], "strangers": "b"}
    table = strictest([a, b])
    assert table["thresholds"] == [[1.05, 1.2], [0.9, 0.98]]
    assert [p["strangers"] for p in table["populations"]] == ["a", "b"]


def test_a_population_of_a_few_people_is_reported_but_sets_nothing() -> None:
    big = {"gallery_faces": [100, 1000], "fpir": [0.01], "thresholds": [[1.1], [0.9]], "draws": [5, 1],
           "strangers": "big", "fillers": {}, "people": 81}
    few = {**big, "thresholds": [[1.0], [0.7]], "strangers": "few", "people": 14}
    table = strictest([few, big])
    assert table["thresholds"] == [[1.1], [0.9]]
    assert [(p["strangers"], p["sets_the_table"]) for p in table["populations"]] == [("few", False), ("big", True)]
    assert table["strangers"] == "big"
