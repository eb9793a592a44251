"""Raw HTTP calls for tests that talk to a real server process and look at the answer as it is (status and JSON body,
whatever they are). The multipart body is encoded by httpx, as the client library's (:mod:`facesearch.client`)."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx


def call(url: str, method: str = "GET", fields: dict[str, str] | None = None,
         files: list[tuple[str, bytes]] | None = None, timeout: float = 60,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Returns (status, parsed JSON body, or the text when it is not JSON); raises OSError when the server is
    unreachable or does not answer within ``timeout``."""
    multipart = [(k, (f"f{i}.jpg", data, "image/jpeg")) for i, (k, data) in enumerate(files or [])]
    try:
        r = httpx.request(method, url, data=fields, files=multipart or None, headers=headers, timeout=timeout)
    except httpx.TransportError as e:
        raise OSError(str(e) or repr(e)) from e
    if not r.content:
        return r.status_code, None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")
