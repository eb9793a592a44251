"""The scale-out tiers, measured on this machine: replicas on PostgreSQL, vectors in Milvus Lite.

    python bench/scale.py [--seconds 40] [--faces 1000000] [--milvus-faces 1000000] [--json PATH]

Starts a throwaway PostgreSQL cluster (Debian's server binaries, as the tests do) unless --database-url names one.
Figures, each side by side with its embedded-tier counterpart in the same run:
- photos/s of /v1/search at concurrency 16 with 1, 2 and 3 `facesearch serve` replicas on one PostgreSQL
  (requests spread round-robin), and one server on SQLite; LFW photos, a gallery of 100 LFW people;
- the time from a write acknowledged by one replica to its face in another replica's index (p50/p99 of 200 single
  enrollments, the other replica in its own process, following the change log: NOTIFY wakes it);
- bulk enrollment (batches of 1,000 faces) into PostgreSQL and into SQLite, faces/s;
- replica start-up with ``--faces`` in PostgreSQL: from PostgreSQL alone, and from its snapshot plus 1,000 changes;
- Milvus Lite beside FAISS (exact) on the same ``--milvus-faces`` vectors: insert faces/s, one-query search p50, and
  the decision agreement of bench/gallery.py (top identity and match/unknown equal to exact search's);
- ``facesearch gallery compact`` on PostgreSQL and on SQLite: 20,000 faces with chips and crops, 1% deleted first.
Sections run alone with ``--skip`` naming the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from gallery import data, decision_agreement, people, photos, stranger_threshold  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from index import Gallery, NewFace  # noqa: E402
from tests.app.client import call, quote  # noqa: E402
from tests.conftest import LFW, Server  # noqa: E402

DIM = 128
CONCURRENCY = 16


def lfw_people(n: int, photos_each: int) -> list[str]:
    return sorted(d.name for d in LFW.iterdir() if (d / f"{d.name}_{photos_each:04d}.jpg").exists())[:n]


def throughput(urls: list[str], probes: list[bytes], seconds: float) -> tuple[float, int]:
    """Searches per second by CONCURRENCY clients spread over ``urls``; every answer must be a 200 with a face."""
    done, failed = [0], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        k = i
        while time.monotonic() < stop:
            status, body = call(f"{urls[k % len(urls)]}/v1/search", "POST", files=[("image", probes[k % len(probes)])],
                                timeout=120)
            with lock:
                if status == 200 and body["faces"]:
                    done[0] += 1
                else:
                    failed.append(status)
            k += CONCURRENCY

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONCURRENCY)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise SystemExit(f"{len(failed)} searches failed: {failed[:5]}")
    return done[0] / (time.monotonic() - t0), done[0]


def bench_replicas(work: Path, url: str, seconds: float, out: dict[str, Any]) -> None:
    names = lfw_people(100, 2)
    env = {"FACESEARCH_DATABASE_URL": url}
    servers = [Server(work / f"replica{i}" / "data", **env) for i in range(3)]
    sqlite = None
    try:
        for s in servers:
            s.wait_ready(timeout=300)
        for name in names:  # the gallery: one photo each, enrolled through the first replica
            photo = (LFW / name / f"{name}_0001.jpg").read_bytes()
            status, body = call(f"{servers[0].url}/v1/identities/{quote(name)}/faces", "POST",
                                fields={"face": "largest"}, files=[("image", photo)])
            assert status == 201, body
        probes = [(LFW / n / f"{n}_0002.jpg").read_bytes() for n in names]
        throughput([s.url for s in servers], probes[:16], 5)  # warm-up
        for n in (1, 2, 3):
            rate, count = throughput([s.url for s in servers[:n]], probes, seconds)
            out[f"photos_per_s_{n}_replicas"] = rate
            out[f"searches_{n}_replicas"] = count
            print(f"{n} replica(s) on PostgreSQL: {rate:.1f} photos/s ({count} searches)", flush=True)
    finally:
        for s in servers:
            s.stop()
    try:
        sqlite = Server(work / "sqlite" / "data")
        sqlite.wait_ready(timeout=300)
        for name in names:
            call(f"{sqlite.url}/v1/identities/{quote(name)}/faces", "POST", fields={"face": "largest"},
                 files=[("image", (LFW / name / f"{name}_0001.jpg").read_bytes())])
        throughput([sqlite.url], probes[:16], 5)
        rate, count = throughput([sqlite.url], probes, seconds)
        out["photos_per_s_sqlite"] = rate
        print(f"1 server on SQLite: {rate:.1f} photos/s ({count} searches)", flush=True)
    finally:
        if sqlite is not None:
            sqlite.stop()
    out["ratio_3_replicas_to_1"] = out["photos_per_s_3_replicas"] / out["photos_per_s_1_replicas"]
    out["ratio_1_replica_postgres_to_sqlite"] = out["photos_per_s_1_replicas"] / out["photos_per_s_sqlite"]


FOLLOWER = textwrap.dedent("""
    import sys, time
    from index import Gallery
    g = Gallery(sys.argv[1], dim=128, model_version="bench", database_url=sys.argv[2])
    print("ready", flush=True)
    last, end = g.index.live, time.time() + float(sys.argv[3])
    while time.time() < end:
        n = g.index.live
        if n != last:
            print(time.time(), n, flush=True)
            last = n
        time.sleep(0.0002)
    g.close()
""")


def bench_lag(work: Path, url: str, out: dict[str, Any], writes: int = 200) -> None:
    writer = Gallery(work / "lag-writer", dim=DIM, model_version="bench", database_url=url)
    base = writer.index.live
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(work / "lag-follower"), url, str(writes * 0.1 + 20)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    rng = np.random.default_rng(5)
    vecs, _ = photos(rng, people(rng, writes)), None
    acked = []
    for i, v in enumerate(vecs):
        writer.add_faces(f"lag-{i}", [NewFace(v)])
        acked.append(time.time())
        time.sleep(float(rng.uniform(0.02, 0.08)))  # writes arrive one at a time, not in a burst
    seen: dict[int, float] = {}
    for line in proc.stdout:
        t, n = line.split()
        for k in range(len(seen) + base + 1, int(n) + 1):
            seen.setdefault(k, float(t))
        if len(seen) >= writes:
            break
    proc.kill()
    proc.wait()
    writer.close()
    lags = sorted((seen[base + i + 1] - acked[i]) * 1000 for i in range(writes))
    out["replica_lag_p50_ms"] = statistics.median(lags)
    out["replica_lag_p99_ms"] = lags[int(0.99 * (len(lags) - 1))]
    out["replica_lag_max_ms"] = lags[-1]
    out["replica_lag_writes"] = writes
    print(f"write -> other replica: p50 {out['replica_lag_p50_ms']:.1f} ms, p99 {out['replica_lag_p99_ms']:.1f} ms",
          flush=True)


def fill(g: Gallery, vecs: np.ndarray, who: np.ndarray, batch: int = 1000) -> float:
    t = time.perf_counter()
    for i in range(0, len(vecs), batch):
        g.add_many([(f"id-{w:07d}", NewFace(x)) for x, w in zip(vecs[i : i + batch], who[i : i + batch],
                                                                  strict=True)])
    return len(vecs) / (time.perf_counter() - t)


def bench_bulk_and_startup(work: Path, database: Callable[[], str], faces: int, out: dict[str, Any]) -> None:
    v, who, _ = data(100_000)
    pg = Gallery(work / "bulk-pg", dim=DIM, model_version="bulk", database_url=database())
    lite = Gallery(work / "bulk-sqlite", dim=DIM, model_version="bulk")
    out["bulk_add_per_s_postgres"] = fill(pg, v, who)
    out["bulk_add_per_s_sqlite"] = fill(lite, v, who)
    out["ratio_bulk_postgres_to_sqlite"] = out["bulk_add_per_s_postgres"] / out["bulk_add_per_s_sqlite"]
    print(f"bulk add of 100k: PostgreSQL {out['bulk_add_per_s_postgres']:,.0f}/s, "
          f"SQLite {out['bulk_add_per_s_sqlite']:,.0f}/s", flush=True)
    for name, g in (("postgres", pg), ("sqlite", lite)):  # single-face adds and deletes with their erasure steps
        g.snapshot(force=True)
        adds, deletes = [], []
        for x in photos(np.random.default_rng(3), people(np.random.default_rng(4), 30)):
            t0 = time.perf_counter()
            (face_id,) = g.add_faces("single", [NewFace(x)])
            adds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            g.delete_face(face_id)
            deletes.append(time.perf_counter() - t0)
        out[f"single_add_p50_ms_{name}"] = statistics.median(adds) * 1000
        out[f"single_delete_p50_ms_{name}"] = statistics.median(deletes) * 1000
    print(f"single add / delete p50 at 100k: PostgreSQL {out['single_add_p50_ms_postgres']:.1f} / "
          f"{out['single_delete_p50_ms_postgres']:.1f} ms, SQLite {out['single_add_p50_ms_sqlite']:.1f} / "
          f"{out['single_delete_p50_ms_sqlite']:.1f} ms", flush=True)
    pg.close()
    lite.close()

    v, who, _ = data(faces)
    url = database()
    g = Gallery(work / "startup-a", dim=DIM, model_version="startup", database_url=url)
    out["startup_faces"] = faces
    out["bulk_add_per_s_postgres_to_1m"] = fill(g, v, who)
    g.close()
    shutil.rmtree(work / "startup-a")
    t = time.perf_counter()
    g = Gallery(work / "startup-a", dim=DIM, model_version="startup", database_url=url)
    out["startup_from_postgres_s"] = time.perf_counter() - t
    assert g.index.live == faces
    g.close()  # writes the snapshot
    other = Gallery(work / "startup-b", dim=DIM, model_version="startup", database_url=url)
    extra, extra_who = photos(np.random.default_rng(9), people(np.random.default_rng(8), 1000)), np.arange(1000)
    fill(other, extra, extra_who, batch=1)  # 1,000 changes after the snapshot, made by another replica
    other.close()
    t = time.perf_counter()
    g = Gallery(work / "startup-a", dim=DIM, model_version="startup", database_url=url)
    out["startup_from_snapshot_plus_log_s"] = time.perf_counter() - t
    assert g.index.live == faces + 1000
    g.close()
    print(f"start-up at {faces:,} faces: from PostgreSQL alone {out['startup_from_postgres_s']:.1f} s, "
          f"from snapshot + 1,000 changes {out['startup_from_snapshot_plus_log_s']:.1f} s", flush=True)


def bench_compact(work: Path, url: str, out: dict[str, Any], faces: int = 20_000) -> None:
    """``Gallery.compact`` (``facesearch gallery compact``) on PostgreSQL and on SQLite: the same faces, each with a
    chip and a source crop of their median sizes (random bytes: coded images do not compress), 1% deleted one
    by one first; seconds, and the store's bytes before and after."""
    rng = np.random.default_rng(11)
    v, who, _ = data(faces)
    for name, g in (("postgres", Gallery(work / "compact-pg", dim=DIM, model_version="c", database_url=url)),
                    ("sqlite", Gallery(work / "compact-sqlite", dim=DIM, model_version="c"))):
        for i in range(0, faces, 500):
            g.add_many([(f"id-{w:07d}", NewFace(x, thumbnail=rng.bytes(5_400), source=rng.bytes(48_000)))
                        for x, w in zip(v[i : i + 500], who[i : i + 500], strict=True)])
        for face_id in range(1, faces + 1, 100):
            g.delete_face(face_id)
        out[f"compact_store_bytes_before_{name}"] = g.store.size_bytes()
        t = time.perf_counter()
        report = g.compact()
        out[f"compact_s_{name}"] = time.perf_counter() - t
        out[f"compact_store_bytes_after_{name}"] = g.store.size_bytes()
        out[f"compact_left_{name}"] = report["store"]["left"]
        g.close()
    out["compact_faces"] = faces
    print(f"compact at {faces:,} faces with chips and crops: PostgreSQL {out['compact_s_postgres']:.1f} s "
          f"({out['compact_store_bytes_before_postgres'] / 1e9:.2f} GB), SQLite {out['compact_s_sqlite']:.1f} s "
          f"({out['compact_store_bytes_before_sqlite'] / 1e9:.2f} GB)", flush=True)


def bench_milvus(work: Path, n: int, out: dict[str, Any]) -> None:
    from index.milvus import MilvusIndex
    from index.vectors import VectorIndex

    v, who, centres = data(n)
    ids = np.arange(1, n + 1, dtype=np.int64)
    owner = np.concatenate([[-1], who])
    exact = VectorIndex(DIM, "exact")
    t = time.perf_counter()
    for i in range(0, n, 1000):
        exact.add(ids[i : i + 1000], v[i : i + 1000])
    out["faiss_insert_per_s"] = n / (time.perf_counter() - t)
    milvus = MilvusIndex(str(work / "milvus.db"), DIM, "bench")
    t = time.perf_counter()
    for i in range(0, n, 1000):
        milvus.add(ids[i : i + 1000], v[i : i + 1000])
    milvus.flush()  # as `facesearch gallery reindex` ends (the adds flushed every 2,000 rows already)
    out["milvus_insert_per_s"] = n / (time.perf_counter() - t)
    assert milvus.live == n
    qrng = np.random.default_rng(7)
    probes = photos(qrng, centres[qrng.integers(0, len(centres), 1000)])
    strangers = photos(qrng, people(qrng, 1000))
    threshold = stranger_threshold(exact.search, photos(qrng, people(qrng, 1000)))
    milvus.search(probes[:1], 10)  # loads the collection
    for name, index in (("milvus", milvus), ("faiss", exact), ("milvus_again", milvus)):
        times = []
        for q in probes[:100]:
            t0 = time.perf_counter()
            index.search(q[None, :], 10)
            times.append(time.perf_counter() - t0)
        out[f"{name}_search_p50_ms"] = statistics.median(times) * 1000
    dp, ds = decision_agreement(milvus.search, exact.search, probes, strangers, owner, threshold)
    out["milvus_decision_agreement_probes"], out["milvus_decision_agreement_strangers"] = dp, ds
    out["milvus_faces"] = n
    out["ratio_milvus_to_faiss_search_p50"] = out["milvus_search_p50_ms"] / out["faiss_search_p50_ms"]
    out["ratio_milvus_to_faiss_insert"] = out["milvus_insert_per_s"] / out["faiss_insert_per_s"]
    milvus.close()
    print(f"Milvus Lite at {n:,}: insert {out['milvus_insert_per_s']:,.0f}/s "
          f"(FAISS {out['faiss_insert_per_s']:,.0f}/s), search p50 {out['milvus_search_p50_ms']:.2f} ms "
          f"(FAISS {out['faiss_search_p50_ms']:.2f} ms), "
          f"decision agreement {dp:.4f} / {ds:.4f}", flush=True)


def save(path: Path | None, out: dict[str, Any]) -> None:
    """Merge this run's figures into ``path`` (figures of sections skipped now keep their earlier values)."""
    if path is None:
        return
    old = json.loads(path.read_text()) if path.exists() else {}
    commit = machine()["git_commit"]
    old.update({**out, **machine(), "concurrency": CONCURRENCY})
    old.setdefault("sections", {})
    for key in out:
        old["sections"][key] = commit  # the commit each figure was measured at
    path.write_text(json.dumps(old, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=40.0, help="per throughput measurement")
    p.add_argument("--faces", type=int, default=1_000_000, help="start-up measurement's gallery size")
    p.add_argument("--milvus-faces", type=int, default=1_000_000)
    p.add_argument("--database-url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    p.add_argument("--skip", nargs="*", default=[], choices=["replicas", "lag", "bulk", "milvus", "compact"])
    p.add_argument("--json", type=Path, help="figures merged into this file after each section")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fs-scale-"))
    cluster = None
    out: dict[str, Any] = {}
    try:
        if a.database_url is None:
            from tests.conftest import free_port
            from tests.postgres import Cluster

            cluster = Cluster(free_port())

        def database() -> str:
            return a.database_url or cluster.new_database()  # type: ignore[union-attr]

        sections = [("replicas", lambda: bench_replicas(work, database(), a.seconds, out)),
                    ("lag", lambda: bench_lag(work, database(), out)),
                    ("bulk", lambda: bench_bulk_and_startup(work, database, a.faces, out)),
                    ("milvus", lambda: bench_milvus(work, a.milvus_faces, out)),
                    ("compact", lambda: bench_compact(work, database(), out))]
        for name, run in sections:
            if name not in a.skip:
                run()
                save(a.json, out)  # each section's figures kept as it ends (a later section may be skipped)
    finally:
        if cluster is not None:
            cluster.remove()
        shutil.rmtree(work, ignore_errors=True)
    for k, v in out.items():
        print(f"{k:40s} {v:,.3f}" if isinstance(v, float) else f"{k:40s} {v}")
    print(json.dumps({**machine(), "concurrency": CONCURRENCY}))


if __name__ == "__main__":
    main()
