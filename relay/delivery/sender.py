"""One webhook attempt over HTTP, reported as data (the delivery hot path).

Transport choice, by ``bench/transport.py`` on a 2-core machine against a local uvicorn
receiver: a shared ``aiohttp.ClientSession`` is several times faster than ``httpx.AsyncClient``
(whose pool degrades as concurrency rises, encode/httpx#3215) and clearly faster than httpx over
the ``httpx-aiohttp`` transport, so the sender uses aiohttp directly. One session (one pool of
keep-alive connections) is shared by every delivery in a worker process.

Every failure mode the delivery log must show becomes an :class:`AttemptOutcome` instead of an
exception, because the caller's job is to *record* the attempt and schedule the next one, not
to handle a dozen exception types: timeouts (covering DNS, connect, request and the body read,
as one budget), refused connections, TLS errors, redirects (never followed: a 3xx is a failure,
and following one could lead to a refused address), and targets the policy refuses.
Only the first 1 KiB of a response body is read; a larger body is abandoned with its
connection rather than buffered.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import aiohttp
from yarl import URL

from relay._exceptions import TargetNotAllowed
from relay.db.types import storable
from relay.delivery.targets import CheckingResolver, TargetPolicy

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


EXCERPT_BYTES = 1024
_CHECKED_URLS_MAX = 10_000
DEFAULT_USER_AGENT = "clever-events-relay/0.1 (+webhooks)"


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt did, as stored in the delivery log."""

    status_code: int | None
    duration_ms: int
    error: str | None = None
    response_excerpt: str = ""
    retry_after: str | None = None
    attempted_at: datetime = field(default_factory=_now)  # when the request was started

    @property
    def succeeded(self) -> bool:
        """A 2xx answer that arrived in full within the timeout."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410: the receiver asks for the subscription to be disabled."""
        return self.status_code == 410

    @property
    def result(self) -> str:
        """The class of outcome ``relay_delivery_attempts_total`` counts it under."""
        if self.succeeded:
            return "succeeded"
        error = self.error or ""
        if error.startswith("timeout"):
            return "timeout"
        if error.startswith(("target not allowed", "invalid url")):
            return "refused"
        return "connection_error" if self.status_code is None else "http_error"


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _describe_connector_error(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    where = f"{exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"dns: cannot resolve {exc.host}: {os_error.strerror or os_error}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"tls: certificate rejected for {where}: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"tls: handshake with {where} failed: {os_error}"
    if isinstance(os_error, ConnectionRefusedError):
        return f"connection refused: {where}"
    detail = os_error.strerror or str(os_error) or type(os_error).__name__
    return f"connection failed: {where}: {detail}"


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _describe_connector_error(exc)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected: the server closed the connection without a complete response"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"payload: malformed response body: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"protocol: invalid HTTP response: {exc.message or exc}"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid url: {exc}"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection failed: {exc.strerror or exc}"
    if isinstance(exc, ConnectionError | OSError):
        return f"connection failed: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _status_error(status: int, reason: str | None, location: str | None) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        if location and len(location) > 200:
            location = location[:200] + "..."
        target = f" to {location}" if location else ""
        return f"redirect: {status}{target} not followed"
    return f"http {status}" + (f" {reason}" if reason else "")


class WebhookSender:
    """Sends webhook attempts over one shared aiohttp session; use as an async context manager.

    ``limit`` bounds open connections across all targets (the worker's job concurrency bounds
    them in practice); ``limit_per_host`` (0 = unbounded) protects a single slow receiver from
    taking every connection.
    """

    def __init__(
        self,
        *,
        timeout: float,
        policy: TargetPolicy,
        user_agent: str = DEFAULT_USER_AGENT,
        limit: int = 1000,
        limit_per_host: int = 0,
        keepalive_timeout: float = 30.0,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.timeout = timeout
        self.policy = policy
        self.user_agent = user_agent
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive_timeout = keepalive_timeout
        self._inner_resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._checked_urls: dict[str, URL] = {}

    async def __aenter__(self) -> WebhookSender:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            keepalive_timeout=self._keepalive_timeout,
            resolver=CheckingResolver(self.policy, self._inner_resolver),
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # One deadline for the whole attempt (waiting for a connection, sending, the
            # reply and its excerpt), to the millisecond (no rounding up to whole seconds):
            # aiohttp's own timer, where asyncio.timeout() around it asked the running loop
            # three times per attempt, each a getpid() system call on Python 3.11
            timeout=aiohttp.ClientTimeout(total=self.timeout, ceil_threshold=math.inf),
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one receiver's cookies around
            trust_env=False,  # no proxy from the environment: the policy checks direct addresses
            raise_for_status=False,
            headers={"User-Agent": self.user_agent},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _check_url(self, url: str) -> URL:
        """Parse ``url`` and apply the checks that need no DNS; cache the verdict (it depends on
        the string alone: resolved addresses are checked per connection by the resolver)."""
        target = URL(url)
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        # aiohttp connects to literal IPs without asking the resolver: check them here.
        self.policy.check_host(target.raw_host)
        if len(self._checked_urls) >= _CHECKED_URLS_MAX:
            self._checked_urls.clear()
        self._checked_urls[url] = target
        return target

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> AttemptOutcome:
        """POST ``body`` to ``url`` once; never raises for HTTP, network or policy failures."""
        session = self._session
        if session is None:
            raise RuntimeError("WebhookSender is not open: use 'async with WebhookSender(...)'")
        attempted_at, started = _now(), time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        excerpt = b""
        error: str | None = None

        def done() -> AttemptOutcome:
            return AttemptOutcome(
                status_code=status,
                duration_ms=round((time.perf_counter() - started) * 1000),
                error=None if error is None else storable(error),
                response_excerpt=storable(excerpt.decode("utf-8", errors="replace")),
                retry_after=retry_after,
                attempted_at=attempted_at,
            )

        target = self._checked_urls.get(url)
        if target is None:
            try:
                target = self._check_url(url)
            except TargetNotAllowed as exc:
                error = f"target not allowed: {exc}"
                return done()
            except ValueError as exc:
                error = f"invalid url: {exc}"
                return done()

        try:
            async with session.post(
                target, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                error = _status_error(status, response.reason, response.headers.get("Location"))
                excerpt = await _read_excerpt(response.content)
        except TimeoutError:
            if status is None:
                error = f"timeout: no response within {_fmt_seconds(self.timeout)}"
            else:
                error = f"timeout: response body not received within {_fmt_seconds(self.timeout)}"
        except TargetNotAllowed as exc:
            error = f"target not allowed: {exc}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = _describe_error(exc)
        except Exception as exc:  # a bug or an exotic failure: record it, don't lose the job
            logger.exception("unexpected error delivering to %s", url)
            error = f"unexpected: {_describe_error(exc)}"
        return done()


async def _read_excerpt(stream: aiohttp.StreamReader) -> bytes:
    """Up to EXCERPT_BYTES of the body. A body that ends within it leaves the connection
    reusable; a longer one is abandoned and aiohttp closes that connection on release."""
    chunks: list[bytes] = []
    remaining = EXCERPT_BYTES
    while remaining > 0:
        chunk = await stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
