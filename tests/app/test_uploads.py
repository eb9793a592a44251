"""Uploads refused before they are read, against a real server over raw sockets: a body without a key gets 401 after
a few KB of it were sent; a body over FACESEARCH_MAX_BODY_MB gets 413; a form with more files than an enrollment
takes is refused; the temporary folder does not grow."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

KEY = "k-uploads-123"


def send_headers_then_body(url: str, path: str, headers: dict[str, str], chunks: int, chunk: bytes) -> tuple[int, dict,
                                                                                                             int]:
    """POST with these headers, then up to ``chunks`` chunks of the body while the server has not answered; the
    status, the JSON body and the bytes of body sent before the answer came."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall((head + "\r\n").encode())
        sent = 0
        s.settimeout(0.05)
        answer = b""
        for _ in range(chunks):
            try:
                answer = s.recv(65536)
                if answer:
                    break
            except TimeoutError:
                pass
            try:
                s.sendall(chunk)
            except OSError:  # the server answered and closed
                break
            sent += len(chunk)
        s.settimeout(60)
        while True:  # the whole answer: its headers, then Content-Length bytes of body
            head_end = answer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = next(int(line.split(b":", 1)[1]) for line in answer[:head_end].split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                if len(answer) >= head_end + 4 + length:
                    break
            more = s.recv(65536)
            if not more:
                break
            answer += more
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1]), sent


def test_a_body_without_a_key_is_refused_before_it_is_read(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(tmp_path / "data", FACESEARCH_API_KEYS=KEY, FACESEARCH_MAX_BODY_MB="1",
                            TMPDIR=str(tmp_path))
    server.wait_ready()
    gigabyte = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(1 << 30)}
    status, body, sent = send_headers_then_body(server.url, "/v1/identities/x/faces", gigabyte, 4096, b"x" * 4096)
    assert status == 401 and body["code"] == "unauthorized", body
    assert sent <= 64 * 1024, f"{sent} bytes of body went in before the 401"

    # with the key, a body over the limit: refused as soon as the header says so
    status, body, sent = send_headers_then_body(server.url, "/v1/identities/x/faces", {**gigabyte, "X-API-Key": KEY},
                                                4096, b"x" * 4096)
    assert status == 413 and body["code"] == "too_large", body
    assert sent <= 64 * 1024

    # and streamed without a length (chunked, a valid form's file part): refused once 1 MB has come, the temporary
    # folder kept small
    start = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    chunk = b"%x\r\n%s\r\n" % (len(start), start) + b"%x\r\n%s\r\n" % (8192, b"y" * 8192) * 4
    status, body, sent = send_headers_then_body(
        server.url, "/v1/identities/x/faces",
        {"Content-Type": "multipart/form-data; boundary=x", "Transfer-Encoding": "chunked", "X-API-Key": KEY},
        1024, chunk)
    assert status == 413 and body["code"] == "too_large", body
    assert sent < 4 * 1024 * 1024
    spooled = sum(f.stat().st_size for f in tmp_path.glob("tmp*") if f.is_file())
    assert spooled <= 2 * 1024 * 1024


def test_more_files_than_an_enrollment_takes_are_refused(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.app.client import call

    server = server_factory(tmp_path / "data")
    server.wait_ready()
    status, body = call(f"{server.url}/v1/identities/x/faces", "POST", files=[("image", b"a")] * 1001)
    assert 400 <= status < 500 and body["code"] in ("bad_request", "validation_error", "too_large"), (status, body)
