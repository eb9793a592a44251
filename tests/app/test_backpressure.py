"""Back-pressure against a real server: beyond FACESEARCH_MAX_WAITING requests waiting for a request thread, 503
``busy`` with Retry-After at once; the service stays live meanwhile, nothing acknowledged is lost, and a request
whose client went away while it waited is dropped before its work starts."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from tests.app.client import call
from tests.conftest import lfw_photo

PEOPLE = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld"]


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"p.jpg\"\r\n"
                    "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n" for k, data in files)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, photo: bytes) -> tuple[int, dict, str | None]:
    """(status, JSON body, Retry-After header)."""
    body, ctype = multipart([("image", photo)])
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read()), r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers.get("Retry-After")


def test_a_storm_of_clients_gets_busy_answers_and_loses_nothing(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(tmp_path / "data", FACESEARCH_WORKERS="1", FACESEARCH_MAX_WAITING="4")
    server.wait_ready()
    photos = [lfw_photo(p, 1) for p in PEOPLE]
    start = threading.Barrier(200)
    live: list[int] = []

    def client(n: int) -> tuple[str, int, dict, str | None]:
        start.wait()
        if n == 0:  # liveness is answered on the event loop, whatever waits for a thread
            live.append(call(f"{server.url}/health/live")[0])
        if n % 2:  # an importer: told to come back, it comes back (sooner than asked, to keep the test short)
            who = f"person-{n}"
            first = answer = post(f"{server.url}/v1/identities/{who}/faces", photos[n % len(photos)])
            deadline = time.monotonic() + 600
            while answer[0] == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
                answer = post(f"{server.url}/v1/identities/{who}/faces", photos[n % len(photos)])
            finished[who] = answer[0]
            return (who, *first)
        return ("", *post(f"{server.url}/v1/search", photos[n % len(photos)]))

    finished: dict[str, int] = {}
    with ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(client, range(200)))  # each answer within urllib's timeout: none hangs
    assert live == [200]
    busy = [a for a in answers if a[1] == 503]
    assert busy, "200 clients at once with 1 thread and 4 waiting: some must be told to come back"
    for _, _status, body, retry in busy:
        assert body["code"] == "busy" and retry is not None and int(retry) > 0, body
    assert all(a[1] in (200, 201, 503) for a in answers), [a[1:3] for a in answers if a[1] not in (200, 201, 503)]
    enrolled = [who for who, status in finished.items() if status == 201]
    assert len(enrolled) == 100, f"every importer got through in the end: {sorted(set(finished.values()))}"
    for who in enrolled:  # every acknowledged enrollment is stored
        status, body = call(f"{server.url}/v1/identities/{who}")
        assert status == 200 and body["faces"] == 1, (who, body)
    assert call(f"{server.url}/v1/search", "POST", files=[("image", photos[0])])[0] == 200  # and it serves on


def test_a_request_whose_client_left_while_waiting_is_dropped(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(tmp_path / "data", FACESEARCH_WORKERS="1", FACESEARCH_MAX_WAITING="1000")
    server.wait_ready()
    photo = lfw_photo(PEOPLE[0], 1)
    body, ctype = multipart([("image", photo)])
    parts = urlsplit(server.url)
    head = (f"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()

    def leave_while_waiting() -> None:
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
            s.sendall(head + body)  # the whole request; it waits behind the others for the one request thread
            time.sleep(0.3)  # then the client goes, before any answer

    def keep_busy(_: int) -> int:
        return post(f"{server.url}/v1/search", photo)[0]

    with ThreadPoolExecutor(50) as pool:
        busy = [pool.submit(keep_busy, n) for n in range(40)]  # a queue of seconds of work for one thread
        time.sleep(0.2)
        for f in [pool.submit(leave_while_waiting) for _ in range(10)]:
            f.result()
        assert all(f.result() == 200 for f in busy)
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=60) as r:
        metrics = r.read().decode()
    dropped = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('facesearch_requests_dropped_total{reason="client_gone"}')]
    assert dropped and dropped[0] >= 1, metrics[-2000:]
