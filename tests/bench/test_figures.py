"""The published figures: each number marked in README.md, docs/figures.md and docs/model-card.md is what its results
file says, and each such file was made at a commit whose measured code is still this one's (bench/figures.py)."""

from __future__ import annotations

from bench import figures


def test_every_published_number_is_its_files() -> None:
    published = [m for doc in figures.PUBLISHED for m in figures.marks(doc.read_text())]
    assert len(published) >= 10  # the v3 open set, find my photos and clustering lines at least
    assert figures.wrong_numbers() == []


def test_every_file_behind_a_published_number_is_current() -> None:
    assert figures.stale_files() == []


def test_a_marker_reads_its_value_by_path_and_format(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "x.json").write_text('{"rows": [{"set": "a b", "found": 0.51234}], "rate": 0.0123, "n": 1511}')
    monkeypatch.setattr(figures, "RESULTS", tmp_path)
    text = ("found <!--f x.json rows[set=a b].found .3f-->0.9<!--/f-->, "
            "accepted <!--f x.json rate .2%-->?<!--/f--> of <!--f x.json n ,d-->1<!--/f-->")
    assert figures.render(text) == ("found <!--f x.json rows[set=a b].found .3f-->0.512<!--/f-->, accepted "
                                    "<!--f x.json rate .2%-->1.23%<!--/f--> of <!--f x.json n ,d-->1,511<!--/f-->")
