"""A tiny urllib client for tests that talk to a real server process."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


def call(url: str, method: str = "GET", fields: dict[str, str] | None = None,
         files: list[tuple[str, bytes]] | None = None, timeout: float = 60,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Returns (status, parsed JSON body); raises OSError when the server is unreachable."""
    body = None
    headers = dict(headers or {})
    if fields is not None or files is not None:
        boundary = uuid.uuid4().hex
        parts = []
        for k, v in (fields or {}).items():
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
        for i, (k, data) in enumerate(files or []):
            parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"f{i}.jpg\"\r\n"
                         "Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")
