"""Async client for Clever's Events API (``GET /v3.1/events``) and Data API lists
(``GET /v3.1/{type}``, for syncs): one request per call, errors mapped, token kept secret.

It doesn't retry: the poll job and the sync own retry policy (they know about leases and the
district's status). It does pace: every request waits on the ``TokenPacer`` first, so after a
429 nothing goes out with that token before the reset, whoever calls. The token travels only
in the ``Authorization`` header; messages, logs and reprs carry at most a hash of it
(``token_key``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

import aiohttp
import httpx
from yarl import URL

from relay import counters
from relay._exceptions import (
    CleverBadBody,
    CleverRateLimited,
    CleverResponseError,
    CleverResponseTooLarge,
    CleverServerError,
    CleverTransportError,
    CleverUnauthorized,
)
from relay.clever.events import (
    CleverEvent,
    EventsPage,
    is_valid_event_id,
    parse_event,
    parse_events_page,
    safe_excerpt,
)
from relay.clever.ratelimit import (
    RateLimit,
    TokenPacer,
    parse_reset,
    parse_retry_after,
    token_key,
)
from relay.clever.records import DATA_TYPES, RecordsPage, parse_records_page

__all__ = [
    "MAX_LIMIT",
    "CleverClient",
    "error_excerpt",
    "error_from_response",
    "rate_limit_reset",
    "transport_error",
]

logger = logging.getLogger("relay.clever")

MAX_LIMIT = 10_000  # above it Clever answers 413
REQUEST_ID_HEADER = "clever-request-id"
USER_AGENT = "clever-events-relay"
# When a 429 says nothing usable about its reset: Clever's window is 60 s.
DEFAULT_RATE_LIMIT_WAIT = 60.0
# The most a reply may hold: a page of ``limit`` events gets RESPONSE_BASE_BYTES plus
# RESPONSE_BYTES_PER_EVENT each (real events are 1-10 KiB; a page of 1,000 may take 17 MiB).
# A Data API page gets the same per record: a record is an event's ``data.object``, no larger
# (the recorded users take ~0.8 KiB each, sections up to 1.5 KiB with 50 students).
# Read as it streams in and abandoned past the cap: a 50 MB page once took a worker to 1.6 GB.
RESPONSE_BASE_BYTES = 1024 * 1024
RESPONSE_BYTES_PER_EVENT = 16 * 1024
# A header value must be visible ASCII; checked up front so no HTTP client ever echoes a bad token.
#: printable ASCII, no spaces (also the API schema's pattern for a district token)
TOKEN_PATTERN = "^[!-~]+$"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
#: keep-alive connections to Clever at most (a burst of polls queues for one beyond that)
CONNECTIONS_PER_HOST = 100
READ_CHUNK = 64 * 1024
_HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}


def is_valid_token(token: object) -> bool:
    """A token an HTTP header can carry: printable ASCII without spaces, as Clever issues."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


@dataclass(frozen=True)
class Answer:
    """A reply read whole (within its cap): all that error mapping and parsing look at."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


class HttpReply(Protocol):
    """What ``error_from_response`` reads: an ``Answer`` or an ``httpx.Response``."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True)
class _Reply:
    content: bytes
    request_id: str | None
    rate_limit: RateLimit | None
    log_fields: dict[str, object]


class CleverClient:
    """``async with CleverClient("https://api.clever.com") as clever: await clever.list_events(t)``.

    ``list_records`` reads the Data API the same way (same pacer, errors, cap and logs): one
    district token is one rate-limit bucket at Clever, whichever API it reads.

    Requests go over one ``aiohttp.ClientSession`` (a pool of keep-alive connections per host,
    made on first use): plain ``httpx.AsyncClient`` costs several times more CPU per request
    under concurrency (encode/httpx#3215), which a worker polling a thousand districts pays on
    every poll. Pass ``session`` to share a pool (it is then not closed here) and ``pacer`` to
    share pacing between clients in one process; by default each client has its own pacer.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        pacer: TokenPacer | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._owns_session = session is None
        self._session = session
        self._timeout = timeout
        self.pacer = pacer if pacer is not None else TokenPacer()

    def __repr__(self) -> str:
        return f"CleverClient({self._base_url!r})"

    async def __aenter__(self) -> CleverClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        """The session, made in the running loop on first use. Each phase of a request
        (connect, every read) has ``timeout`` seconds, as httpx's ``timeout=`` had; no
        cookies are kept (one client serves every district)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=CONNECTIONS_PER_HOST),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._timeout, sock_read=self._timeout
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def list_events(
        self, token: str, *, starting_after: str | None = None, limit: int = 1000
    ) -> EventsPage:
        """One page of events after ``starting_after`` (None: the oldest retained), ascending.

        An empty page means caught up. A cursor older than retention is *not* an error at
        Clever (it silently answers from the oldest event): gap detection is the caller's.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        params: dict[str, str] = {"limit": str(limit)}
        if starting_after is not None:
            if not is_valid_event_id(starting_after):
                raise ValueError("starting_after must be a 24-hex Clever event id")
            params["starting_after"] = starting_after
        reply = await self._get(token, "/v3.1/events", params, items=limit)
        return _page(reply, token)

    async def latest_event_id(self, token: str) -> str | None:
        """The newest event id (``ending_before=last&limit=1``), or None if there are none.

        The seed for a district that starts "now"; take it before any full Data API sync.
        """
        reply = await self._get(token, "/v3.1/events", {"ending_before": "last", "limit": "1"})
        return _page(reply, token).last_id

    async def get_event(self, token: str, event_id: str) -> CleverEvent:
        """One event by id (``GET /v3.1/events/{id}``)."""
        if not is_valid_event_id(event_id):
            raise ValueError("event_id must be a 24-hex Clever event id")
        reply = await self._get(token, f"/v3.1/events/{event_id}", {})
        try:
            return parse_event(reply.content, request_id=reply.request_id, redact=(token,))
        except CleverBadBody as exc:
            _log_bad_body(reply, exc)
            raise

    async def list_records(
        self,
        token: str,
        record_type: str,
        *,
        starting_after: str | None = None,
        limit: int = 1000,
    ) -> RecordsPage:
        """One page of the district's ``record_type`` records (one of ``DATA_TYPES``) after
        ``starting_after`` (None: from the first), ascending by id.

        An empty page is the end of the list. Page on to it rather than stopping at a short
        page or at a missing ``next`` link: neither is documented as the end, and a list
        ended early is read as records deleted. ``users`` come without ``role=``: every role.
        """
        if record_type not in DATA_TYPES:
            raise ValueError(f"record_type must be one of {', '.join(DATA_TYPES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        params: dict[str, str] = {"limit": str(limit)}
        if starting_after is not None:
            if not is_valid_event_id(starting_after):
                raise ValueError("starting_after must be a 24-hex Clever record id")
            params["starting_after"] = starting_after
        reply = await self._get(
            token, f"/v3.1/{record_type}", params, items=limit, noun=record_type
        )
        try:
            return parse_records_page(
                reply.content,
                record_type=record_type,
                rate_limit=reply.rate_limit,
                request_id=reply.request_id,
                redact=(token,),
            )
        except CleverBadBody as exc:
            _log_bad_body(reply, exc)
            raise

    async def _capped_get(
        self, url: str, params: Mapping[str, str], token: str, cap: int
    ) -> Answer:
        """The response with its body read (decompressed), raising _TooLarge as soon as it
        passes ``cap`` (declared or streamed): never more than ``cap`` bytes in memory, and a
        reply abandoned early closes its connection. Redirects are not followed."""
        # the query encoded here (yarl's encoding of a params dict was ~4 % of an idle
        # worker's CPU)
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        target = URL(f"{url}?{query}" if query else url, encoded=True)
        async with self._http().get(
            target, headers=_HEADERS | {"Authorization": f"Bearer {token}"}, allow_redirects=False
        ) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _TooLarge
            body = bytearray()
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                body += chunk
                if len(body) > cap:
                    raise _TooLarge
            return Answer(response.status, response.headers, bytes(body))

    async def _get(
        self,
        token: str,
        path: str,
        params: Mapping[str, str],
        *,
        items: int = 1,
        noun: str = "events",
    ) -> _Reply:
        """GET ``path``; the reply is capped at what ``items`` events or records (``noun``,
        for the message) may take."""
        if not is_valid_token(token):
            raise ValueError("token is empty or holds characters an HTTP header can't carry")
        key = token_key(token)
        await self.pacer.wait(key)
        what = f"GET {path}"
        log_fields: dict[str, object] = {"method": "GET", "path": path, "token_key": key}
        started = time.perf_counter()
        cap = RESPONSE_BASE_BYTES + items * RESPONSE_BYTES_PER_EVENT
        try:
            response = await self._capped_get(self._base_url + path, params, token, cap)
        except _TooLarge:
            counters.CLEVER_REQUESTS.labels("too_large").inc()
            too_large = CleverResponseTooLarge(
                f"{what}: Clever's answer is larger than {cap:,} bytes (the cap for "
                f"{items} {noun}); asking for smaller pages",
                limit=items,
            )
            logger.warning("%s", too_large, extra=log_fields)
            raise too_large from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            counters.CLEVER_REQUESTS.labels("error").inc()
            failure = transport_error(exc, what, redact=(token,))
            logger.warning("%s", failure, extra={**log_fields, "error": type(exc).__name__})
            raise failure from None
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        counters.CLEVER_REQUESTS.labels(str(response.status_code)).inc()
        request_id = response.headers.get(REQUEST_ID_HEADER)
        rate_limit = RateLimit.from_headers(response.headers)
        self.pacer.record(key, rate_limit)
        log_fields |= {
            "clever_request_id": request_id,
            "status_code": response.status_code,
            "duration_ms": duration_ms,
        }
        logger.debug("%s -> %s in %sms", what, response.status_code, duration_ms, extra=log_fields)
        if not response.is_success:
            error = error_from_response(
                response, what=what, credentials="the district token", redact=(token,)
            )
            if isinstance(error, CleverRateLimited):
                self.pacer.block(key, error.reset_at)
            logger.warning("%s", error, extra=log_fields)
            raise error
        content = response.content
        if not content.strip():
            error_body = CleverBadBody(f"{what}: Clever sent an empty body", request_id=request_id)
            logger.warning("%s", error_body, extra=log_fields)
            raise error_body
        return _Reply(content, request_id, rate_limit, log_fields)


class _TooLarge(Exception):
    pass


def _page(reply: _Reply, token: str) -> EventsPage:
    try:
        return parse_events_page(
            reply.content,
            rate_limit=reply.rate_limit,
            request_id=reply.request_id,
            redact=(token,),
        )
    except CleverBadBody as exc:
        _log_bad_body(reply, exc)
        raise


def _log_bad_body(reply: _Reply, exc: CleverBadBody) -> None:
    logger.warning("GET %s: %s", reply.log_fields["path"], exc, extra=reply.log_fields)


def error_from_response(
    response: HttpReply,
    *,
    what: str,
    credentials: str,
    redact: Iterable[str] = (),
    now: float | None = None,
) -> CleverResponseError:
    """The exception for a non-2xx answer, with a short cleaned excerpt of the body.

    ``credentials`` names what a 401 rejected ("the district token", "the client
    credentials"); the credentials themselves never appear.
    """
    status = response.status_code
    request_id = response.headers.get(REQUEST_ID_HEADER)
    excerpt = error_excerpt(response.content, redact=redact)
    detail = f": {excerpt}" if excerpt else ""
    if status == 401:
        return CleverUnauthorized(
            f"{what}: Clever rejected {credentials} (401){detail}",
            status_code=status,
            request_id=request_id,
            body_excerpt=excerpt,
        )
    if status == 429:
        reset_at = rate_limit_reset(response.headers, time.time() if now is None else now)
        return CleverRateLimited(
            f"{what}: rate limited by Clever (429) until {reset_at:.0f}{detail}",
            reset_at=reset_at,
            request_id=request_id,
            body_excerpt=excerpt,
        )
    cls = CleverServerError if status >= 500 else CleverResponseError
    return cls(
        f"{what}: Clever answered {status}{detail}",
        status_code=status,
        request_id=request_id,
        body_excerpt=excerpt,
    )


def rate_limit_reset(headers: Mapping[str, str], now: float) -> float:
    """When a 429 ends: ``X-RateLimit-Reset``, or a later ``Retry-After``, else now + 60 s.

    Never earlier than a second from now: a reset already past (clock skew) must still stop
    the immediate retry that would earn another 429.
    """
    candidates = [t for t in (parse_reset(headers), parse_retry_after(headers, now)) if t]
    reset_at = max(candidates) if candidates else now + DEFAULT_RATE_LIMIT_WAIT
    return max(reset_at, now + 1.0)


def error_excerpt(content: bytes, *, redact: Iterable[str] = ()) -> str:
    """``{"message": ...}`` when the body is Clever's JSON error, else a cleaned text excerpt."""
    if not content.strip():
        return ""
    try:
        document = json.loads(content)
    except ValueError:
        document = None
    if isinstance(document, dict):
        for key in ("message", "error"):
            if isinstance(document.get(key), str):
                return safe_excerpt(document[key], redact=redact)
    return safe_excerpt(content, redact=redact)


def transport_error(
    exc: httpx.HTTPError | aiohttp.ClientError | TimeoutError,
    what: str,
    *,
    redact: Iterable[str] = (),
) -> CleverTransportError:
    """A ``CleverTransportError`` for an HTTP failure; its text is redacted and cut short. An
    aiohttp failure is named as httpx names it (``ConnectError``, ``ReadTimeout``, ...), so a
    district's ``last_error`` reads the same whichever client asked."""
    timed_out = isinstance(exc, httpx.TimeoutException | TimeoutError)
    kind = "timed out" if timed_out else "failed"
    detail = safe_excerpt(str(exc), redact=redact)
    name = _httpx_name(exc)
    return CleverTransportError(f"{what} {kind} ({name}){': ' + detail if detail else ''}")


def _httpx_name(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "ConnectTimeout"
    if isinstance(exc, TimeoutError) and not isinstance(exc, httpx.HTTPError):
        return "ReadTimeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "RemoteProtocolError"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "ReadError"
    return type(exc).__name__
