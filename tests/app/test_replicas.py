"""Three `facesearch serve` processes on one PostgreSQL database, each with its own data folder: writes through
one are seen by the others; a replica SIGKILLed during concurrent enrollment loses nothing acknowledged and leaves
nothing half-applied on the survivors; PostgreSQL stopped as by a crash mid-traffic turns requests and readiness into
503s with Retry-After, the replicas recover by themselves when it returns, and nothing acknowledged is lost."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from tests.app.client import call, quote
from tests.conftest import lfw_photo
from tests.enrollers import Enrollers

PROBES = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]


def start(tmp_path: Path, server_factory: Any, url: str, n: int) -> list[Any]:
    servers = [server_factory(tmp_path / f"replica{i}" / "data", FACESEARCH_DATABASE_URL=url) for i in range(n)]
    for s in servers:
        s.wait_ready(timeout=240)
    return servers


def enroll(server: Any, ident: str, name: str, timeout: float = 60) -> tuple[int, Any]:
    """Two photos of LFW's ``name`` as the new identity ``ident``, through this replica."""
    return call(f"{server.url}/v1/identities/{quote(ident)}/faces", "POST", fields={"face": "largest"},
                files=[("image", lfw_photo(name, 1)), ("image", lfw_photo(name, 2))], timeout=timeout)


def top(server: Any, name: str) -> list[tuple[str, int]]:
    status, body = call(f"{server.url}/v1/search", "POST", fields={"k": "5"}, files=[("image", lfw_photo(name, 3))])
    assert status == 200, body
    return [(c["identity"], c["face_id"]) for c in body["faces"][0]["candidates"]]


def settle(servers: list[Any], timeout: float = 30) -> int:
    """Wait until every replica's index holds exactly the stored faces; returns that count."""
    deadline = time.monotonic() + timeout
    while True:
        infos = [call(f"{s.url}/v1/info")[1]["gallery"] for s in servers]
        if all(i["indexed"] == i["faces"] for i in infos):
            return int(infos[0]["faces"])
        assert time.monotonic() < deadline, f"replicas did not catch up: {infos}"
        time.sleep(0.2)


def test_writes_through_one_replica_are_seen_by_the_others(tmp_path: Path, server_factory: Any, pg_url: str) -> None:
    a, b, c = start(tmp_path, server_factory, pg_url, 3)
    for name in PROBES:
        status, body = enroll(a, name, name)
        assert status == 201, body
    settle([a, b, c], timeout=10)
    for name in PROBES:  # enrolled through a, searched through b and c
        assert top(b, name)[0][0] == name
        assert top(c, name)[0][0] == name
    # deleted through c: at once gone from every replica's answers (hits are checked against PostgreSQL)
    gone = {f["face_id"] for f in call(f"{a.url}/v1/identities/Tony_Blair")[1]["face_list"]["items"]}
    status, body = call(f"{c.url}/v1/identities/Tony_Blair", "DELETE")
    assert status == 200 and body["faces_deleted"] == 2
    for s in (a, b):
        assert "Tony_Blair" not in {i for i, _ in top(s, "Tony_Blair")}
        assert call(f"{s.url}/v1/identities/Tony_Blair")[0] == 404
    settle([a, b, c], timeout=10)
    for s in (a, b, c):
        assert call(f"{s.url}/v1/info")[1]["gallery"]["indexed"] == 6
    # the audit is shared: the enrollments through a and the delete through c
    lines = call(f"{b.url}/v1/audit?limit=100")[1]["items"]
    assert [ln["event"] for ln in lines].count("enroll") == 4
    assert any(ln["event"] == "delete_identity" and set(ln["face_ids"]) == gone for ln in lines)


def assert_all_or_nothing(server: Any, acked: dict[str, list[int]]) -> dict[str, int]:
    """Every acknowledged enrollment is there with its face ids; every identity holds its two photos."""
    status, listing = call(f"{server.url}/v1/identities?limit=1000")
    assert status == 200, listing
    counts = {i["identity"]: i["faces"] for i in listing["items"]}
    assert all(n == 2 for n in counts.values()), {k: v for k, v in counts.items() if v != 2}  # none half-applied
    for ident, face_ids in acked.items():
        status, detail = call(f"{server.url}/v1/identities/{quote(ident)}")
        assert status == 200, f"acknowledged enrollment {ident} lost"
        assert sorted(f["face_id"] for f in detail["face_list"]["items"]) == face_ids
    return counts


def test_sigkill_of_a_replica_during_concurrent_enrollment(tmp_path: Path, server_factory: Any, pg_url: str) -> None:
    a, b, c = start(tmp_path, server_factory, pg_url, 3)
    killed = threading.Event()
    clients = Enrollers([a, a, b, b], enroll, lambda server, answer, error, began: server is a and killed.is_set())
    clients.wait_for(6)  # a is killed with enrollments through it in flight
    killed.set()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    clients.wait_for(len(clients.acked) + 4)  # b goes on enrolling after a died
    acked = clients.finish()

    faces = settle([b, c])
    counts = assert_all_or_nothing(c, acked)
    assert faces == 2 * len(counts)
    probes = [ident.split("-", 1)[1] for ident in list(acked)[:3]]
    answers = [top(b, p) for p in probes]
    assert answers == [top(c, p) for p in probes]
    # the killed replica comes back from its own snapshot plus the log and agrees
    a2 = server_factory(tmp_path / "replica0" / "data", FACESEARCH_DATABASE_URL=pg_url)
    a2.wait_ready(timeout=240)
    settle([a2, b, c])
    assert [top(a2, p) for p in probes] == answers


def test_postgres_outage_gives_503_and_replicas_recover(tmp_path: Path, server_factory: Any, pg_cluster: Any,
                                                        pg_url: str) -> None:
    """PostgreSQL stopped without a shutdown checkpoint (``immediate``: as a crash) while enrollments are in flight
    through both replicas: requests answer 503 + Retry-After meanwhile, the replicas recover by themselves, every
    acknowledged enrollment is there and none is half-written."""
    a, b = start(tmp_path, server_factory, pg_url, 2)
    assert enroll(a, "Colin_Powell", "Colin_Powell")[0] == 201
    settle([a, b], timeout=10)
    down = threading.Event()

    def unavailable(server: Any, answer: Any, error: Any, began: float) -> bool:
        return answer is not None and answer[0] == 503 and answer[1].get("code") == "store_unavailable" \
            and down.is_set()

    clients = Enrollers([a, b, a, b], enroll, unavailable)
    clients.wait_for(4)
    down.set()
    pg_cluster.stop("immediate")
    try:
        for s in (a, b):
            for status, body in (enroll(s, "Tony_Blair", "Tony_Blair"),
                                 call(f"{s.url}/v1/search", "POST", files=[("image", lfw_photo("Colin_Powell", 3))]),
                                 call(f"{s.url}/v1/identities")):
                assert status == 503 and body["code"] == "store_unavailable", (status, body)
            status, body = call(f"{s.url}/health/ready")
            assert status == 503 and body["status"] == "store_unavailable"
            assert call(f"{s.url}/health/live")[0] == 200
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(f"{a.url}/v1/identities", timeout=30)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and e.headers["Retry-After"] == "5"
    finally:
        pg_cluster.start()
    deadline = time.monotonic() + 60
    while not all(call(f"{s.url}/health/ready")[0] == 200 for s in (a, b)):
        assert time.monotonic() < deadline, "replicas did not recover after PostgreSQL came back"
        time.sleep(0.5)
    clients.wait_for(len(clients.acked) + 4)  # enrolling again through both, without a restart
    acked = clients.finish()
    settle([a, b], timeout=30)
    assert_all_or_nothing(a, acked)
    assert enroll(b, "Tony_Blair", "Tony_Blair")[0] == 201  # written through b, found through a
    settle([a, b], timeout=15)
    assert top(a, "Tony_Blair")[0][0] == "Tony_Blair"
    # enrolled before the outage, found through b; the clients may have enrolled the same two photos again as
    # "<n>-Colin_Powell" (equal vectors, any of them may rank first)
    assert top(b, "Colin_Powell")[0][0].rsplit("-", 1)[-1] == "Colin_Powell"
    assert call(f"{b.url}/v1/identities/Colin_Powell")[0] == 200


def test_a_delete_through_one_replica_is_scrubbed_from_every_replicas_snapshot(tmp_path: Path, server_factory: Any,
                                                                                pg_url: str) -> None:
    import psycopg

    from tests.erasure import files_holding

    a, b = start(tmp_path, server_factory, pg_url, 2)
    ids = {}
    for name in PROBES[:2]:
        status, body = enroll(a, name, name)
        assert status == 201, body
        ids[name] = [f["face_id"] for f in body["faces"]]
    settle([a, b], timeout=10)
    with psycopg.connect(pg_url) as con:
        stored = {f"{i}/embedding": bytes(e) for i, e in con.execute(
            "SELECT id, embedding FROM faces WHERE id = ANY(%s)", ([i for v in ids.values() for i in v],))}
    assert len(stored) == 4
    a.stop()
    b.stop()  # clean stops write both replicas' snapshots: b's holds a's enrollments too
    folders = [tmp_path / "replica0" / "data", tmp_path / "replica1" / "data"]
    for folder in folders:
        assert set(files_holding(folder, stored)) == set(stored), "the scan must find what is stored"
    a, b = (server_factory(f, FACESEARCH_DATABASE_URL=pg_url) for f in folders)
    a.wait_ready(timeout=240)
    b.wait_ready(timeout=240)
    victim = PROBES[0]
    status, body = call(f"{b.url}/v1/identities/{victim}", "DELETE")  # through b; a follows
    assert status == 200 and body["faces_deleted"] == 2
    gone = {k: v for k, v in stored.items() if int(k.split("/")[0]) in ids[victim]}
    kept = {k: v for k, v in stored.items() if k not in gone}
    assert files_holding(folders[1], gone) == {}  # the replica that deleted: before it answered
    deadline = time.monotonic() + 10
    while files_holding(folders[0], gone):  # the other: once it applied the change (milliseconds)
        assert time.monotonic() < deadline, "the other replica's snapshot still holds the deleted face"
        time.sleep(0.1)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    for folder in folders:
        assert files_holding(folder, gone) == {}
        assert set(files_holding(folder, kept)) == set(kept)
    with psycopg.connect(pg_url) as con:
        assert con.execute("SELECT count(*) FROM faces WHERE id = ANY(%s)", (ids[victim],)).fetchone()[0] == 0
