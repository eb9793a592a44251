"""A small client for a running FaceSearch server (standard library only), for `facesearch enroll/search/verify
--url`. A server that cannot be reached raises :class:`Unreachable` with one line that says where and why."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any


class Unreachable(Exception):
    pass


class Remote:
    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def call(self, method: str, path: str, fields: dict[str, str] | None = None,
             files: list[tuple[str, str, bytes]] | None = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body). ``files``: (field, file name, bytes), sent as multipart/form-data."""
        headers = dict(self.headers)
        body = None
        if fields is not None or files is not None:
            boundary = uuid.uuid4().hex
            parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                     for k, v in (fields or {}).items()]
            parts += [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{name}\"\r\n"
                       "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
                      for k, name, data in files or []]
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read() or b"{}")
            except ValueError:
                return e.code, {"detail": f"HTTP {e.code} from {self.url} (not a FaceSearch answer)"}
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(f"cannot reach the FaceSearch server at {self.url}: {reason}") from e


def identity_path(identity: str) -> str:
    return "/v1/identities/" + urllib.parse.quote(identity, safe="")
