"""The Starlette app: Clever's Events API (``/v3.1/events``), its Data API (``/v3.1/districts``,
``schools``, ``users``, ``sections``, ``courses``, ``terms``, ``resources``, each as a list and
as ``/{id}``), ``/oauth/tokens``, and ``/_sim`` control.

Order of checks for ``/v3.1/...`` requests, both APIs alike: injected fault (the first rule
whose district and path prefix match; ``slow`` delays and goes on, ``truncated`` cuts the real
answer), then the bearer token (401), then the per-token rate limit (429, empty body; one
bucket per token for both APIs, as recorded), then the route. Every API response carries
``clever-request-id`` and the rate-limit headers, except the HTML 404 (rate-limit headers
only) and /oauth/tokens.

Both APIs read one roster (``roster.py``): a record in the Data API is what its events made
it, expired or not, until drift (``POST /_sim/districts/{id}/drift``) changes it with none.

Choices where Clever is unconfirmed (``docs/architecture.md``). Events: a malformed cursor
or an unknown ``record_type`` is a 400; ``school=`` keeps only events whose record belongs to
that school before or after the change (districts, courses, terms, resources, contacts never
do); ``next``/``prev`` links keep ``limit`` and the filters, with keys sorted as Go's
``url.Values.Encode`` does (matching the recorded ``limit=25&starting_after=...``).

Data API (the recordings in ``clever-recorded/data-api/`` settle the rest): a cursor that is
not a 24-hex id is a 400 (``ending_before=last`` too: that is the events' alone); an unknown
``role`` is a 400, and ``role`` on a type other than users is ignored, as are other unknown
parameters (``count=`` is kept in ``self`` only, as recorded); ``next`` appears when the page
is full (the recordings never show a full last page; a client then reads one empty page);
``prev`` appears on a non-empty page asked with ``starting_after`` (recorded) or
``ending_before`` (as the events do); ``next`` and ``prev`` keep ``limit`` (when given) and
``role`` and put the cursor **last**, not sorted: the recorded ``prev`` of a ``limit=3`` page
is ``?limit=3&ending_before=...``; ``self`` is the path plus the query as sent, with no
trailing ``?`` when there is none. A missing record, a malformed id or another district's
record is a 404 ``{"message": "Resource not found"}``; an unknown type is Express's HTML 404.
``/resources`` answers with the same envelope (the v3.1 spec's; the one v3.0 recording,
``{"resources": []}``, is not followed). An unshared district (after ``districts.deleted``)
lists no district.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.clever.simulator.control import control_routes
from relay.clever.simulator.faults import JSON_TYPE, fault_response, truncate
from relay.clever.simulator.records import RECORD_TYPES
from relay.clever.simulator.roster import USER_ROLES
from relay.clever.simulator.state import District, Simulator
from relay.clever.simulator.stream import API_PREFIX

#: the Data API's list routes, in the order a sync reads them
DATA_TYPES = ("districts", "schools", "users", "sections", "courses", "terms", "resources")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
_ID = re.compile(r"^[0-9a-f]{24}$")
_INT = re.compile(r"^[+-]?\d+$")
_EXPRESS_404 = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    "</head>\n<body>\n<pre>Cannot {method} {path}</pre>\n</body>\n</html>\n"
)

Handler = Callable[[Request, District], Response]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _message(status: int, message: str, headers: dict[str, str]) -> Response:
    return JSONResponse({"message": message}, status, headers=headers, media_type=JSON_TYPE)


def _json(body: bytes, headers: dict[str, str], status: int = 200) -> Response:
    return Response(body, status, headers=headers, media_type=JSON_TYPE)


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _log(request: Request, **fields: Any) -> None:
    entry = request.scope.get("sim.log")
    if entry is not None:
        entry.update(fields)


async def _api(request: Request, handler: Handler) -> Response:
    """Faults, auth and rate limit around an API handler."""
    sim = _sim(request)
    token = _bearer(request)
    district = sim.district_for_token(token)
    _log(request, district=district.id if district else None)
    headers = {"clever-request-id": uuid.uuid4().hex}
    rule = sim.faults.pick(district.id if district else None, request.url.path)
    if rule is not None:
        _log(request, fault=rule.kind)
        if rule.kind == "slow":
            await asyncio.sleep(rule.delay)
        elif rule.kind != "truncated":
            return fault_response(rule, headers, sim.rate.limit)
    if district is None or token is None:
        return _message(401, "Unauthorized: invalid or missing bearer token", headers)
    allowed, limit_headers = sim.rate.hit(token)
    headers.update(limit_headers)
    if not allowed:
        return Response(b"", 429, headers=headers)
    response = handler(request, district)
    response.headers.update(headers)
    if rule is not None and rule.kind == "truncated" and response.status_code == 200:
        cut = truncate(bytes(response.body))
        response.body = cut
        response.headers["content-length"] = str(len(cut))
    return response


def _link(params: list[tuple[str, str]]) -> str:
    return f"{API_PREFIX}/events?" + urlencode(sorted(params, key=lambda kv: kv[0]))


def _limit(raw_limit: str | None) -> int | Response:
    """``limit`` as the events and the Data API take it, or the 400/413 to answer."""
    if raw_limit is None:
        return DEFAULT_LIMIT
    if not _INT.match(raw_limit.strip()):
        return _message(400, f"invalid limit: {raw_limit!r}", {})
    limit = int(raw_limit)
    if limit <= 0:
        return _message(400, "limit must be a positive integer", {})
    if limit > MAX_LIMIT:
        return _message(413, f"limit must be at most {MAX_LIMIT}", {})
    return limit


def list_events(request: Request, district: District) -> Response:
    sim = _sim(request)
    q = request.query_params
    raw_limit = q.get("limit")
    limit = _limit(raw_limit)
    if isinstance(limit, Response):
        return limit
    starting_after = q.get("starting_after") or None
    ending_before = q.get("ending_before") or None
    for name, value in (("starting_after", starting_after), ("ending_before", ending_before)):
        if (
            value is not None
            and not _ID.match(value)
            and not (name == "ending_before" and value == "last")
        ):
            return _message(400, f"invalid {name}: {value!r}", {})
    record_types = q.getlist("record_type")
    unknown = [t for t in record_types if t not in RECORD_TYPES]
    if unknown:
        return _message(400, f"invalid record_type: {unknown[0]!r}", {})
    school = q.get("school") or None

    sim.prune(district)
    page = district.store.page(
        limit, starting_after, ending_before, frozenset(record_types), school
    )
    filters = [("record_type", t) for t in record_types] + ([("school", school)] if school else [])
    if raw_limit is not None:
        filters.append(("limit", str(limit)))
    links = [
        {"rel": "self", "uri": f"{API_PREFIX}/events?{request.scope['query_string'].decode()}"}
    ]
    if page and (starting_after or ending_before):
        links.append({"rel": "prev", "uri": _link([*filters, ("ending_before", page[0].id)])})
    if page:
        links.append({"rel": "next", "uri": _link([*filters, ("starting_after", page[-1].id)])})
    body = b'{"data":[' + b",".join(e.item() for e in page) + b'],"links":'
    return _json(body + _dumps(links) + b"}", {})


def get_event(request: Request, district: District) -> Response:
    _sim(request).prune(district)
    event_id = request.path_params["event_id"]
    event = district.store.by_id.get(event_id)
    if event is None:
        return _message(404, "Resource not found", {})
    links = _dumps([{"rel": "self", "uri": f"{API_PREFIX}/events/{event_id}"}])
    return _json(b'{"data":' + event.raw + b',"links":' + links + b"}", {})


def _uri(prefix: str, rid: str) -> bytes:
    """``"<prefix><rid>"`` as JSON: Clever's ids need no escaping, a scripted one may."""
    return f'"{prefix}{rid}"'.encode() if _ID.match(rid) else _dumps(prefix + rid)


def _records_link(record_type: str, params: list[tuple[str, str]]) -> str:
    return f"{API_PREFIX}/{record_type}?" + urlencode(params)


def list_records(request: Request, district: District, record_type: str) -> Response:
    """``GET /v3.1/<record_type>``: a page of the district's records, ascending by id."""
    q = request.query_params
    raw_limit = q.get("limit")
    limit = _limit(raw_limit)
    if isinstance(limit, Response):
        return limit
    cursors: dict[str, str | None] = {}
    for name in ("starting_after", "ending_before"):
        value = cursors[name] = q.get(name) or None
        if value is not None and not _ID.match(value):
            return _message(400, f"invalid {name}: {value!r}", {})
    starting_after, ending_before = cursors["starting_after"], cursors["ending_before"]
    role = q.get("role") if record_type == "users" else None
    if role is not None and role not in USER_ROLES:
        return _message(400, f"invalid role: {role!r}; expected one of {', '.join(USER_ROLES)}", {})

    pool = district.roster.pools[record_type]
    page = pool.page(limit, starting_after, ending_before, role)
    kept = [("limit", str(limit))] if raw_limit is not None else []
    if role is not None:
        kept.append(("role", role))
    query = request.scope["query_string"].decode()
    links = [{"rel": "self", "uri": f"{API_PREFIX}/{record_type}" + (f"?{query}" if query else "")}]
    if page and (starting_after or ending_before):
        links.append(
            {"rel": "prev", "uri": _records_link(record_type, [*kept, ("ending_before", page[0])])}
        )
    if len(page) == limit:
        links.append(
            {
                "rel": "next",
                "uri": _records_link(record_type, [*kept, ("starting_after", page[-1])]),
            }
        )
    prefix = f"{API_PREFIX}/{record_type}/"
    items = b",".join(
        b'{"data":' + pool.json(rid) + b',"uri":' + _uri(prefix, rid) + b"}" for rid in page
    )
    body = b'{"data":[' + items + b'],"links":'
    return _json(body + _dumps(links) + b"}", {})


def get_record(request: Request, district: District, record_type: str) -> Response:
    """``GET /v3.1/<record_type>/<id>``: one record, bare, with a ``self`` link."""
    record_id = request.path_params["record_id"]
    pool = district.roster.pools[record_type]
    if record_id not in pool:
        return _message(404, "Resource not found", {})
    links = _dumps([{"rel": "self", "uri": f"{API_PREFIX}/{record_type}/{record_id}"}])
    return _json(b'{"data":' + pool.json(record_id) + b',"links":' + links + b"}", {})


def _records_endpoints(record_type: str) -> list[Route]:
    """The list and single-record routes of one Data API type, through :func:`_api`."""

    async def listing(request: Request) -> Response:
        return await _api(request, lambda r, d: list_records(r, d, record_type))

    async def single(request: Request) -> Response:
        return await _api(request, lambda r, d: get_record(r, d, record_type))

    return [
        Route(f"{API_PREFIX}/{record_type}", listing, methods=["GET"]),
        Route(f"{API_PREFIX}/{record_type}/{{record_id}}", single, methods=["GET"]),
    ]


async def events_endpoint(request: Request) -> Response:
    return await _api(request, list_events)


async def event_endpoint(request: Request) -> Response:
    return await _api(request, get_event)


async def oauth_tokens(request: Request) -> Response:
    """``GET /oauth/tokens?owner_type=district[&district=<id>]`` with HTTP Basic credentials.

    Like clever.com's: no clever-request-id, no rate-limit headers.
    """
    sim = _sim(request)
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user = password = ""
    cfg = sim.config
    if scheme.lower() != "basic" or (user, password) != (cfg.client_id, cfg.client_secret):
        return JSONResponse({"message": "invalid client credentials"}, 401, media_type=JSON_TYPE)
    if request.query_params.get("owner_type") != "district":
        return JSONResponse({"message": "owner_type must be district"}, 400, media_type=JSON_TYPE)
    wanted = request.query_params.get("district")
    data = [d.token_json() for d in sim.districts.values() if wanted in (None, d.id)]
    self_uri = f"/oauth/tokens?{request.scope['query_string'].decode()}"
    return JSONResponse(
        {"data": data, "links": [{"rel": "self", "uri": self_uri}]}, media_type=JSON_TYPE
    )


async def not_found(request: Request, exc: Exception) -> Response:
    """Express's HTML 404 (also for a wrong method), with rate-limit headers for a known token."""
    page = _EXPRESS_404.format(method=request.method, path=request.url.path)
    headers: dict[str, str] = {}
    token = _bearer(request)
    if token and _sim(request).district_for_token(token) is not None:
        headers = _sim(request).rate.hit(token)[1]
    return Response(page, 404, headers=headers, media_type="text/html; charset=utf-8")


class RequestLog:
    """ASGI middleware: logs every non-``/_sim`` request with start/end times, status and
    the ``X-RateLimit-Reset`` it answered with."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim
        self.counter = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        self.counter += 1
        entry: dict[str, Any] = {
            "seq": self.counter,
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"),
            "district": None,
            "status": None,
            "fault": None,
            "rate_limit_reset": None,  # X-RateLimit-Reset of the answer (unix seconds)
            "started_wall": time.time(),
            "started_monotonic": time.monotonic(),
            "ended_wall": None,
            "ended_monotonic": None,
        }
        scope["sim.log"] = entry
        self.sim.requests.append(entry)

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-ratelimit-reset":
                        entry["rate_limit_reset"] = int(value)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                entry["ended_wall"] = time.time()
                entry["ended_monotonic"] = time.monotonic()
            await send(message)

        await self.app(scope, receive, send_logged)


def create_app(sim: Simulator | None = None) -> Starlette:
    """The simulator as a Starlette app; a background task generates the steady event rate."""
    simulator = sim or Simulator()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(simulator.run_steady())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route(f"{API_PREFIX}/events", events_endpoint, methods=["GET"]),
        Route(f"{API_PREFIX}/events/{{event_id}}", event_endpoint, methods=["GET"]),
        *(route for t in DATA_TYPES for route in _records_endpoints(t)),
        Route("/oauth/tokens", oauth_tokens, methods=["GET"]),
        *control_routes(),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        404: not_found,
        405: not_found,
    }
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestLog, sim=simulator)],
        exception_handlers=handlers,
    )
    app.state.sim = simulator
    return app
