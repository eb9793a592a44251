"""A subprocess adds faces and is SIGKILLed at random moments; every face it reported as committed
must be there after a restart, no batch may be half-written, and the index must agree with the store."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from index import Gallery

DIM = 16
WRITER = textwrap.dedent("""
    import sys, numpy as np
    from index import Gallery, NewFace
    folder, seed, url = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
    rng = np.random.default_rng(seed)
    g = Gallery(folder, dim=16, model_version="m1", database_url=url)
    print("open", flush=True)
    for b in range(10_000):
        n = int(rng.integers(1, 6))
        v = rng.normal(size=(n, 16)).astype(np.float32)
        tag = f"{seed}-{b}-{n}"
        ids = g.add_many([(f"p{int(rng.integers(0, 50))}", NewFace(x, sha256=tag)) for x in v])
        print("ok", tag, *ids, flush=True)
        if b % 25 == 24:
            g.snapshot()
        if b % 40 == 39:
            print("del", ids[0], flush=True)  # before: a kill may land after the delete commits
            g.delete_face(ids[0])
            print("gone", ids[0], flush=True)  # after: the delete was acknowledged
""")


def test_sigkill_never_loses_a_committed_face(tmp_path: Path, database_url: str | None) -> None:
    rounds = int(os.environ.get("FACESEARCH_KILL_ROUNDS", "20"))
    rnd = random.Random(0)
    committed: dict[int, str] = {}
    deleted: set[int] = set()  # deletes begun (they may or may not have committed)
    gone: set[int] = set()  # deletes acknowledged: they must stay deleted
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for r in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(r), database_url or ""],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open"
        deadline = time.monotonic() + rnd.uniform(0.05, 0.6)
        lines = []
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.set_blocking(proc.stdout.fileno(), True)
        text = proc.stdout.read()
        # only whole lines: a kill may cut the last one short ("gone" without its id, an id cut to its first digits)
        lines = text.splitlines()[: text.count("\n")]
        for line in lines:
            parts = line.split()
            if parts and parts[0] == "ok":
                for face_id in parts[2:]:
                    committed[int(face_id)] = parts[1]
            elif parts and parts[0] == "del":
                deleted.add(int(parts[1]))
            elif parts and parts[0] == "gone":
                gone.add(int(parts[1]))

        g = Gallery(tmp_path, dim=DIM, model_version="m1", database_url=database_url)
        try:
            report = g.verify()
            assert report["ok"], report
            with g.store.read() as c:
                stored = {int(row[0]): row[1] for row in c.execute("SELECT id, sha256 FROM faces")}
            missing = [f for f in committed if f not in stored and f not in deleted]
            assert not missing, f"round {r}: committed faces lost: {missing[:10]}"
            back = sorted(gone & set(stored))
            assert not back, f"round {r}: acknowledged deletes undone: {back[:10]}"
            # all-or-nothing batches: every tag appears exactly as many times as its batch size,
            # less the face this test may have deleted on purpose
            per_tag = Counter(stored.values())
            maybe_deleted = Counter(committed[f] for f in deleted if f in committed)
            for tag, count in per_tag.items():
                size = int(tag.rsplit("-", 1)[1])
                assert size - maybe_deleted.get(tag, 0) <= count <= size, f"partial batch {tag}: {count} of {size}"
        finally:
            g.close()
    assert len(committed) > 50
    assert len(gone) >= 3, f"only {len(gone)} deletes acknowledged: the delete path was hardly exercised"
