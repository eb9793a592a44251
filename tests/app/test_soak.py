"""Soak: mixed enroll/search/verify/delete at concurrency 16 against a real server. Zero 5xx, zero lost
writes, bounded memory; latency percentiles written to artifacts/soak.json.

CI runs one minute (FACESEARCH_SOAK_S, default 60); the slow run takes ten."""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import pytest

from tests.app.client import call, quote
from tests.conftest import LFW, ROOT, rss_kb

NAMES = sorted(d.name for d in LFW.iterdir() if (d / f"{d.name}_0003.jpg").exists())[:200]




def soak(tmp_path: Path, server_factory, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    server = server_factory(tmp_path / "data")
    server.wait_ready()
    photos = {n: [(LFW / n / f"{n}_{k:04d}.jpg").read_bytes() for k in (1, 2, 3)] for n in NAMES}
    lock = threading.Lock()
    live: dict[str, int] = {}  # identity -> acknowledged faces not deleted
    # Writes to one identity are serialised on the client side, so the bookkeeping above follows the
    # server's order: without it, an enrollment committed before a concurrent delete but answered after
    # it would be counted as live. (Concurrent deletes of one identity are tested in test_hostile.)
    ident_locks: dict[str, threading.Lock] = {}
    latencies: dict[str, list[float]] = {"enroll": [], "search": [], "verify": [], "delete": []}
    ok = {"enroll": 0, "search": 0, "verify": 0, "delete": 0}
    deleted: set[str] = set()  # identities whose last acknowledged write was their deletion
    errors: list[str] = []  # collected here: an assert in a worker thread cannot fail the test
    counts = {"requests": 0, "5xx": 0}
    deadline = time.monotonic() + seconds
    # warm-up: the first half (allocator arenas, SQLite page caches and ONNX Runtime's buffers settle); growth is
    # measured over the second half, from the median RSS of its first tenth of the run to that of the last tenth
    # (sampled every second: a single reading catches a batch's buffers on their way back to the allocator)
    start = time.monotonic()
    samples: list[tuple[float, int]] = []  # (seconds into the run, RSS in kB)

    def worker(seed: int) -> None:
        try:
            work(seed)
        except Exception as e:  # a dropped connection or a malformed body: the test fails with it
            with lock:
                errors.append(f"worker {seed}: {e!r}")

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < deadline:
            name = rnd.choice(NAMES)
            op = rnd.choices(["enroll", "search", "verify", "delete"], [3, 5, 2, 1])[0]
            ident = f"{name}-{seed % 4}"
            with lock:
                ident_lock = ident_locks.setdefault(ident, threading.Lock())
            t = time.perf_counter()
            if op == "enroll":
                with ident_lock:
                    status, body = call(f"{server.url}/v1/identities/{quote(ident)}/faces", "POST",
                                        fields={"face": "largest"}, files=[("image", photos[name][0])])
                    if status == 201:
                        with lock:
                            live[ident] = live.get(ident, 0) + 1
                            deleted.discard(ident)
            elif op == "search":
                status, body = call(f"{server.url}/v1/search", "POST", files=[("image", photos[name][2])])
            elif op == "verify":
                status, body = call(f"{server.url}/v1/verify", "POST",
                                    files=[("image1", photos[name][1]), ("image2", photos[name][2])])
            else:
                with ident_lock:
                    status, body = call(f"{server.url}/v1/identities/{quote(ident)}", "DELETE")
                    if status == 200:
                        with lock:
                            live.pop(ident, None)
                            deleted.add(ident)
            with lock:
                latencies[op].append(time.perf_counter() - t)
                counts["requests"] += 1
                # every photo has a face: enroll 201, search/verify 200; delete 200, or 404 when none was live
                good = {"enroll": (201,), "search": (200,), "verify": (200,), "delete": (200, 404)}[op]
                if status in good:
                    ok[op] += 1
                if status >= 500:
                    counts["5xx"] += 1
                    errors.append(f"{op} {status} {body}")

    def sample() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - start, rss_kb(server.proc.pid)))
            time.sleep(1)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    threads.append(threading.Thread(target=sample))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    warm = statistics.median(kb for t, kb in samples if 0.5 * seconds <= t < 0.6 * seconds)
    end = statistics.median(kb for t, kb in samples if t >= 0.9 * seconds)
    assert not errors, errors[:5]
    # zero lost writes, nothing extra: every acknowledged face that was not deleted is there, exactly
    for ident, n in live.items():
        status, body = call(f"{server.url}/v1/identities/{quote(ident)}")
        assert status == 200 and body["faces"] == n, (ident, n, body)
    # and what was deleted stays deleted
    for ident in deleted:
        status, body = call(f"{server.url}/v1/identities/{quote(ident)}")
        assert status == 404, (ident, status, body)
    report: dict[str, float] = {"seconds": seconds, "concurrency": 16, "requests": counts["requests"],
                                "5xx": counts["5xx"], "rss_growth": end / warm - 1,
                                "rss_warm_mb": warm / 1024, "rss_end_mb": end / 1024,
                                "deleted_checked": len(deleted), "live_checked": len(live)}
    for op, n in ok.items():
        report[f"{op}_success_rate"] = n / max(1, len(latencies[op]))
    for op, xs in latencies.items():
        if xs:
            xs.sort()
            report[f"{op}_p50_ms"] = statistics.median(xs) * 1000
            report[f"{op}_p99_ms"] = xs[int(0.99 * (len(xs) - 1))] * 1000
    out = Path(os.environ.get("FACESEARCH_ARTIFACTS", ROOT / "artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"soak-{int(seconds)}s.json").write_text(json.dumps(report, indent=2))
    # every kind of request did real work, nearly always (a route that always answered 4xx would pass the rest)
    assert all(len(latencies[op]) >= 5 for op in ok), report
    assert all(report[f"{op}_success_rate"] >= 0.98 for op in ok), report
    # The target (< 10% after warm-up) is for the 10-minute run. One minute is closer to warm-up: here RSS rose
    # until about 110 s, then held (a 300-s run: 2.1%); single readings at 30 and 60 s measured 3.6%, 4.8-7.6%,
    # 10.7% and once 15.1% (a CI failure), mostly the encoder's buffers growing in steps as larger batches first
    # came. The pipeline's warm-up now runs the largest batch, and the readings are medians (1.0% and 3.1%).
    assert report["rss_growth"] < (0.10 if seconds >= 600 else 0.15), report
    return report


def test_soak(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    soak(tmp_path, server_factory, float(os.environ.get("FACESEARCH_SOAK_S", "60")))


@pytest.mark.slow
def test_soak_ten_minutes(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    soak(tmp_path, server_factory, 600)
