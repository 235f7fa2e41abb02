"""Limits on the API's clients, each answered early with the error shape:

- load: at most ``max_in_flight`` ``/v1`` requests at once per process, the rest 503 with
  ``Retry-After`` at once (300 concurrent lists once exhausted the database pool, queued 30 s
  and ended in 500s and resets);
- rate: a token bucket per token owner, 429 with ``Retry-After`` (after authentication, so a
  request without a valid token is still a 401);
- size: a body over 1 MiB is 413, before it is read or as soon as it grows too large;
- NUL: a NUL character in the path or query is 400 (no id, filter or time holds one, and
  PostgreSQL refuses it in text, so it would surface as a database error).
"""

from __future__ import annotations

import math
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.api.auth import is_api_path
from relay.api.errors import error_response, overloaded

MAX_BODY_BYTES = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = error_response(413, f"request body is larger than {self.max_bytes} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await too_large(scope, receive, send)
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_large(scope, receive, send)


class RejectNulMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            where = "path" if "\x00" in scope["path"] else "query string"
            bad = error_response(400, f"the URL's {where} contains a NUL character (%00)")
            await bad(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_api(scope: Scope) -> bool:
    # lifespan and websocket scopes have no path
    return scope["type"] == "http" and is_api_path(scope["path"])


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_api(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await overloaded(retry_after=1)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class TokenBuckets:
    """A token bucket per key: ``rate`` a second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, now: float | None = None) -> float:
        """Take a token; 0 if there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 10_000:  # keys are owners, few; never an unbounded table
            self._buckets.clear()
        return (1 - tokens) / self.rate

    def describe(self) -> str:
        return f"at most {self.rate:g} a second (bursts of {self.burst:g})"


def retry_after(wait: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait)))}


class RateLimitMiddleware:
    """Per token owner (the admin is one owner too), per process: behind a load balancer
    each replica allows its own rate."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal") if _is_api(scope) else None
        if principal is None:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(str(principal.owner))
        if wait > 0:
            message = f"too many requests for this token: {self.buckets.describe()}"
            await error_response(429, message, headers=retry_after(wait))(scope, receive, send)
            return
        await self.app(scope, receive, send)
