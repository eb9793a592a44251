"""Requests refused before their body is read: a key that is missing or wrong is answered 401 from the headers
alone, and a body over FACESEARCH_MAX_BODY_MB is answered 413 as soon as its Content-Length says so or, streamed
without one, as soon as that many bytes have come; nothing more of it is received (or spooled to disk).

Open mode (no key anywhere) stays local: a request addressed to another host than a loopback name or address (a web
page's DNS rebinding) or posted from another site's page (its ``Origin`` is not the host it is sent to) is refused
with 403, except the health checks; FACESEARCH_ALLOWED_HOSTS adds names."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers

from app.auth import KeyRing, NeedsStore
from app.errors import NOT_LOCAL, RETRY_AFTER_S, STORE_UNAVAILABLE, TOO_LARGE, UNAUTHORIZED, error_response
from index.errors import StoreUnavailable

T = TypeVar("T")


def _hostname(netloc: str) -> str:
    """A Host header's (or an origin's) name, lower case, without its port; an IPv6 address without brackets."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(status: int, code: str, detail: str) -> Any:
    """The error response, closing the connection: the rest of the body is never read."""
    response = error_response(status, code, detail)
    response.headers["Connection"] = "close"
    return response


class RequestGuard:
    """Pure ASGI, outermost: in open mode, requests that are not local refused; the key checked on guarded paths
    (``/v1/...``, and ``/metrics`` unless public) before the body is read (the route's key dependency then checks its
    role); every body held to ``max_body`` bytes while it streams."""

    def __init__(self, app: Any, *, keys: KeyRing, metrics_public: bool, max_body: int,
                 allowed_hosts: list[str] | None = None) -> None:
        self.app, self.keys, self.metrics_public, self.max_body = app, keys, metrics_public, max_body
        self.allowed_hosts = {h.lower() for h in allowed_hosts or []}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            if not scope["path"].startswith("/health/") and not self._local(headers) and \
                    await self._ask(lambda block: self.keys.is_open(block=block)):
                await refusal(403, "forbidden", NOT_LOCAL)(scope, receive, send)
                return
            if self._guarded(scope["path"]) and \
                    await self._ask(lambda block: self.keys.authenticate(headers, block=block)) is None:
                unauthorized = refusal(401, "unauthorized", UNAUTHORIZED)
                unauthorized.headers["WWW-Authenticate"] = "Bearer"
                await unauthorized(scope, receive, send)
                return
        except StoreUnavailable:  # the keys live in the store: answered as any request the store cannot serve
            unavailable = refusal(503, "store_unavailable", STORE_UNAVAILABLE)
            unavailable.headers["Retry-After"] = str(RETRY_AFTER_S)
            await unavailable(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        received, refused, started = 0, False, False

        async def counted_receive() -> Any:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    refused = True
                    if not started:
                        await self._too_large(scope, receive, send)
                    return {"type": "http.disconnect"}  # the app stops reading: the client is as good as gone
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent: whatever the app says after it is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        detail = f"{TOO_LARGE} (the whole request: {self.max_body:,} bytes)"
        await refusal(413, "too_large", detail)(scope, receive, send)

    @staticmethod
    async def _ask(question: Callable[[bool], T]) -> T:
        """The key ring's answer: from memory on the event loop, or from the store in a thread when it must read."""
        try:
            return question(False)
        except NeedsStore:
            return await anyio.to_thread.run_sync(question, True)

    def _local(self, headers: Headers) -> bool:
        """Addressed to this machine (or an allowed name), and not posted from another site's page."""
        host = _hostname(headers.get("host", ""))
        if not (host in self.allowed_hosts or host == "localhost" or host.endswith(".localhost") or _loopback(host)):
            return False
        origin = headers.get("origin")  # browsers send it with a cross-site POST ("null" from a sandboxed page)
        return origin is None or _hostname(urlsplit(origin).netloc) == host

    def _guarded(self, path: str) -> bool:
        if path == "/metrics":
            return not self.metrics_public
        return path.startswith("/v1/")
