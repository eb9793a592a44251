"""The batcher gathers the faces of concurrent requests into one forward pass, waiting only for requests on their way
(detecting faces), never for company that is not coming. Real encoder, real threads; assertions on batch sizes and on
results, with time limits only far beyond any wait a correct batcher makes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from model.embedder import Embedder, load_encoder
from model.pipeline import Batcher

FOREVER_MS = 600_000.0  # a batch window no test may sit out


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_encoder()[0]


@pytest.fixture
def chips(embedder: Embedder) -> np.ndarray:
    size = embedder.config.input_size
    return np.random.default_rng(0).integers(0, 255, (3, size, size, 3), dtype=np.uint8)


@pytest.fixture
def sizes() -> list[int]:
    return []


@pytest.fixture
def batcher(embedder: Embedder, sizes: list[int]) -> Iterator[Batcher]:
    b = Batcher(embedder, wait_ms=FOREVER_MS, on_batch=sizes.append)
    yield b
    b.close()


def finishes(fn, *args) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Runs ``fn`` in a thread; its result, or a failure if it has not returned within 60 s."""
    out: list[np.ndarray] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(60)
    assert out, f"{fn} still waiting after 60 s"
    return out[0]


def test_a_lone_caller_does_not_wait_out_the_batch_window(batcher: Batcher, embedder: Embedder,
                                                          chips: np.ndarray, sizes: list[int]) -> None:
    def lone() -> np.ndarray:
        with batcher.coming() as embed:
            return embed(chips[:1])

    np.testing.assert_allclose(finishes(lone), embedder(chips[:1]), atol=1e-6)
    with batcher.coming():
        pass  # came, found no face, left: nothing to wait for
    finishes(batcher.embed, chips[1:2])
    assert sizes == [1, 1]


def test_callers_on_their_way_share_one_batch(batcher: Batcher, embedder: Embedder, chips: np.ndarray,
                                              sizes: list[int]) -> None:
    results: dict[str, np.ndarray] = {}
    with batcher.coming() as embed_a, batcher.coming() as embed_b:
        # b embeds first, in its own thread: the batch waits for a, still on its way
        t = threading.Thread(target=lambda: results.update(b=embed_b(chips[1:])), daemon=True)
        t.start()
        results["a"] = finishes(embed_a, chips[:1])
        t.join(60)
    assert sizes == [3]
    np.testing.assert_allclose(np.concatenate([results["a"], results["b"]]), embedder(chips), atol=1e-6)


def test_a_caller_that_never_arrives_holds_a_batch_for_the_window_only(embedder: Embedder, chips: np.ndarray) -> None:
    b = Batcher(embedder, wait_ms=50)
    try:
        with b.coming(), b.coming() as embed:
            finishes(embed, chips[:1])  # the other caller stays away: the batch runs when the window closes
            with pytest.raises(RuntimeError, match="once"):
                embed(chips[:1])
    finally:
        b.close()
