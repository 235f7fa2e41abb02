"""Data API pages: ``parse_records_page`` on every real recording, and
``CleverClient.list_records`` over real HTTP against a fake that replays them."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from relay._exceptions import (
    CleverBadBody,
    CleverRateLimited,
    CleverResponseError,
    CleverResponseTooLarge,
    CleverServerError,
    CleverTransportError,
    CleverUnauthorized,
)
from relay.clever.client import RESPONSE_BASE_BYTES, RESPONSE_BYTES_PER_EVENT, CleverClient
from relay.clever.ratelimit import RateLimit, token_key
from relay.clever.records import DATA_TYPES, RecordsPage, parse_records_page
from tests.support.fake_clever import (
    HTML,
    JSON,
    TEXT,
    TOKEN,
    FakeClever,
    ReplayKey,
    Reply,
    assert_clean,
    assert_no_token,
    recorded_reply,
    serve_fake,
)
from tests.support.servers import ServerThread, free_port, serve
from tests.support.simulator import RECORDED

DATA_API = RECORDED / "data-api"
RECORDINGS = sorted(DATA_API.glob("*.json"))
EMPTY = Reply(200, {"content-type": JSON}, b'{"data": [], "links": []}')
USERS_1_LAST = "58da8c63d7dc0ca068000478"
USERS_2_LAST = "58da8c63d7dc0ca068000503"
SCHOOLS_1_LAST = "58da8c58155b940248000009"
SCHOOLS_LAST = "58da8c58155b94024800000a"
STUDENT = "Evalyn"  # a first name in users.json: must never reach a message or a repr


def record_type_of(path: Path) -> str:
    """``users`` for users_next-2.json, ``resources`` for resources_app.json."""
    return path.name.split(".")[0].split("_")[0].split("-")[0]


def recording(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def query(**params: str) -> frozenset[tuple[str, str]]:
    return frozenset(params.items())


# Recorded v3.0 lists, keyed by the v3.1 request they answer; each list ends on an empty page.
REPLAY: dict[ReplayKey, str | Reply] = {
    ("/v3.1/users", query(limit="100")): "data-api/users.json",
    (
        "/v3.1/users",
        query(limit="100", starting_after=USERS_1_LAST),
    ): "data-api/users_with_starting_after.json",
    ("/v3.1/users", query(limit="100", starting_after=USERS_2_LAST)): EMPTY,
    ("/v3.1/schools", query(limit="3")): "data-api/schools_with_limit.json",
    (
        "/v3.1/schools",
        query(limit="3", starting_after=SCHOOLS_1_LAST),
    ): "data-api/schools_next-2.json",
    ("/v3.1/schools", query(limit="3", starting_after=SCHOOLS_LAST)): EMPTY,
    ("/v3.1/districts", query(limit="1000")): "data-api/districts.json",
    ("/v3.1/resources", query(limit="1000")): "data-api/resources_app.json",
}


# --- parsing the recordings -------------------------------------------------------------------


def test_the_recordings_cover_every_data_type() -> None:
    assert len(RECORDINGS) >= 28  # a missing folder must not pass as "nothing to parse"
    assert {record_type_of(path) for path in RECORDINGS} == set(DATA_TYPES)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.name)
def test_every_recording_parses(path: Path) -> None:
    response = recording(path)["response"]
    headers = response["headers"]
    body = json.dumps(response["body"])
    rate_limit = RateLimit.from_headers(headers)
    page = parse_records_page(
        body,
        record_type=record_type_of(path),
        rate_limit=rate_limit,
        request_id=headers.get("clever-request-id"),
    )
    items = response["body"].get("data", [])
    assert len(page.records) == len(items)
    # each record exactly as received, key order included
    assert [json.dumps(r) for r in page.records] == [json.dumps(i["data"]) for i in items]
    assert page.last_id == (items[-1]["data"]["id"] if items else None)
    assert page.rate_limit == rate_limit
    assert page.rate_limit is not None
    assert page.request_id == headers.get("clever-request-id")


def test_resources_app_is_an_empty_page() -> None:
    body = recording(DATA_API / "resources_app.json")["response"]["body"]
    assert body == {"resources": []}
    page = parse_records_page(json.dumps(body), record_type="resources")
    assert page.records == []
    assert page.last_id is None


def test_the_resources_shape_is_only_an_empty_resources_page() -> None:
    with pytest.raises(CleverBadBody, match="users page is not an object with a 'data' list"):
        parse_records_page('{"resources": []}', record_type="users")
    with pytest.raises(CleverBadBody, match="non-empty 'resources' list"):
        parse_records_page(
            '{"resources": [{"id": "58da8c58155b940248000007"}]}', record_type="resources"
        )


def test_last_id_is_the_highest_id_of_a_page_out_of_order() -> None:
    ids = ["58da8c58155b940248000009", "58da8c58155b94024800000a", "58da8c58155b940248000007"]
    body = json.dumps({"data": [{"data": {"id": i}, "uri": f"/v3.1/schools/{i}"} for i in ids]})
    page = parse_records_page(body, record_type="schools")
    assert [r["id"] for r in page.records] == ids  # kept in the order sent
    assert page.last_id == "58da8c58155b94024800000a"
    assert parse_records_page('{"data": []}', record_type="schools").last_id is None


def test_nan_becomes_null() -> None:
    body = '{"data": [{"data": {"id": "58da8c58155b940248000007", "grade": NaN}}]}'
    (record,) = parse_records_page(body, record_type="users").records
    assert record["grade"] is None


def test_a_page_repr_shows_no_record() -> None:
    body = recording(DATA_API / "users.json")["response"]["body"]
    assert STUDENT in json.dumps(body)
    page = parse_records_page(json.dumps(body), record_type="users")
    assert STUDENT not in repr(page)


def test_an_unknown_record_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="record_type must be one of districts, schools"):
        parse_records_page('{"data": []}', record_type="events")


BAD_PAGES = [
    pytest.param(b"<html><body>Hi</body></html>", "body that is not JSON: 'Hi'", id="html"),
    pytest.param(b'{"data": [{"data": {"id": "58', "truncated or invalid JSON at char", id="cut"),
    pytest.param(b"\xff\xfe", "users page: Clever sent", id="not-utf8"),
    pytest.param(b"[]", "users page is not an object: got a list of 0", id="array"),
    pytest.param(b'{"data": {"id": 1}}', "not an object with a 'data' list", id="data-object"),
    pytest.param(b'{"links": []}', "not an object with a 'data' list", id="no-data"),
    pytest.param(b'{"data": ["x"]}', "users page item 0 has no 'data' record object", id="item"),
    pytest.param(
        b'{"data": [{"uri": "/v3.1/users/58da8c63d7dc0ca0680003ed"}]}',
        "item 0 has no 'data' record object: got an object with keys uri",
        id="item-without-data",
    ),
    pytest.param(
        b'{"data": [{"data": "Evalyn"}]}', "got an object with keys data", id="data-string"
    ),
    pytest.param(
        b'{"data": [{"data": {"name": {"first": "Evalyn"}}}]}',
        "item 0 has no valid 24-hex 'id': got None",
        id="no-id",
    ),
    pytest.param(b'{"data": [{"data": {"id": ""}}]}', "'id': got ''", id="empty-id"),
    pytest.param(b'{"data": [{"data": {"id": 7}}]}', "'id': got 7", id="number-id"),
    pytest.param(
        b'{"data": [{"data": {"id": "58DA8C63D7DC0CA0680003ED"}}]}',
        "'id': got '58DA8C63D7DC0CA0680003ED'",
        id="upper-case-id",
    ),
    pytest.param(
        b'{"data": [{"data": {"id": "58da8c63d7dc0ca0680003ed"}}, {"data": {"id": "../x"}}]}',
        "users page item 1 has no valid 24-hex 'id'",
        id="second-item",
    ),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_PAGES)
def test_bad_pages_are_refused_with_a_short_clear_message(body: bytes, fragment: str) -> None:
    with pytest.raises(CleverBadBody) as info:
        parse_records_page(body, record_type="users", request_id="r-1", redact=(TOKEN,))
    message = str(info.value)
    assert fragment in message
    assert STUDENT not in message
    assert "\n" not in message
    assert len(message) <= 200
    assert info.value.request_id == "r-1"


def test_a_bad_page_never_echoes_the_token() -> None:
    for body in (f"denied for {TOKEN}", f'{{"data": [{{"x": "{TOKEN}'):
        with pytest.raises(CleverBadBody) as info:
            parse_records_page(body, record_type="users", redact=(TOKEN,))
        assert_no_token(info.value, info.value.body_excerpt)


# --- list_records over HTTP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeClever, ServerThread]]:
    with serve_fake(REPLAY) as served:
        yield served


@pytest.fixture
def fake(server: tuple[FakeClever, ServerThread]) -> FakeClever:
    server[0].reset()
    return server[0]


@pytest.fixture
def base_url(server: tuple[FakeClever, ServerThread]) -> str:
    return server[1].url


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="relay.clever")
    return caplog


async def read_all(clever: CleverClient, record_type: str, limit: int) -> list[RecordsPage]:
    """Every page of a list, by ``starting_after``, through the first empty one."""
    pages = [await clever.list_records(TOKEN, record_type, limit=limit)]
    while pages[-1].records:
        assert len(pages) < 10, "paging does not end"
        after = pages[-1].last_id
        pages.append(
            await clever.list_records(TOKEN, record_type, starting_after=after, limit=limit)
        )
    return pages


async def test_users_are_paged_by_starting_after_to_an_empty_page(
    fake: FakeClever, base_url: str, logs: pytest.LogCaptureFixture
) -> None:
    async with CleverClient(base_url) as clever:
        pages = await read_all(clever, "users", limit=100)
    assert [len(page.records) for page in pages] == [100, 100, 0]
    ids = [record["id"] for page in pages for record in page.records]
    assert ids == sorted(set(ids))
    assert [seen.query for seen in fake.seen] == [
        {"limit": "100"},
        {"limit": "100", "starting_after": USERS_1_LAST},
        {"limit": "100", "starting_after": USERS_2_LAST},
    ]
    assert {seen.path for seen in fake.seen} == {"/v3.1/users"}
    assert {seen.authorization for seen in fake.seen} == {f"Bearer {TOKEN}"}
    first = recording(DATA_API / "users.json")["response"]
    assert pages[0].records == [item["data"] for item in first["body"]["data"]]
    assert pages[0].rate_limit == RateLimit.from_headers(first["headers"])
    # one DEBUG line per request, with structured fields and no token
    debug = [r for r in logs.records if r.levelno == logging.DEBUG]
    assert [r.__dict__["path"] for r in debug] == ["/v3.1/users"] * 3
    assert {r.__dict__["token_key"] for r in debug} == {token_key(TOKEN)}
    assert_no_token(caplog=logs)


async def test_schools_with_a_small_limit(fake: FakeClever, base_url: str) -> None:
    async with CleverClient(base_url) as clever:
        pages = await read_all(clever, "schools", limit=3)
    assert [len(page.records) for page in pages] == [3, 1, 0]
    assert [page.last_id for page in pages] == [SCHOOLS_1_LAST, SCHOOLS_LAST, None]


async def test_default_limit_and_the_empty_resources_answer(
    fake: FakeClever, base_url: str
) -> None:
    async with CleverClient(base_url) as clever:
        (district,) = (await clever.list_records(TOKEN, "districts")).records
        resources = await clever.list_records(TOKEN, "resources")
    assert district["id"] == "58da8a43cc70ab00017a1a87"
    assert resources.records == []
    assert resources.last_id is None
    assert resources.request_id == "0" * 32
    assert [(s.path, s.query) for s in fake.seen] == [
        ("/v3.1/districts", {"limit": "1000"}),
        ("/v3.1/resources", {"limit": "1000"}),
    ]


ERROR_CASES = [
    pytest.param(
        Reply(401, {"content-type": JSON}, json.dumps({"message": f"bad {TOKEN}"}).encode()),
        CleverUnauthorized,
        "GET /v3.1/users: Clever rejected the district token (401): bad [redacted]",
        id="401-json-echoing-token",
    ),
    pytest.param(
        Reply(
            500,
            {"content-type": HTML},
            b"<html><head><title>Error</title><style>p{color:red}</style></head>"
            b"<body><h1>Internal Server Error</h1><p>for " + TOKEN.encode() + b"</p></body></html>",
        ),
        CleverServerError,
        "GET /v3.1/users: Clever answered 500: Error Internal Server Error for [redacted]",
        id="500-html",
    ),
    pytest.param(
        recorded_reply("resources_student.json"),
        CleverResponseError,
        "GET /v3.1/users: Clever answered 404: Error Cannot GET /v3.0/resources",
        id="404-recorded-html",
    ),
]


@pytest.mark.parametrize(("reply", "error_type", "expected"), ERROR_CASES)
async def test_error_statuses(
    fake: FakeClever,
    base_url: str,
    logs: pytest.LogCaptureFixture,
    reply: Reply,
    error_type: type[CleverResponseError],
    expected: str,
) -> None:
    fake.push(reply)
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverResponseError) as info:
            await clever.list_records(TOKEN, "users")
    assert type(info.value) is error_type
    assert info.value.status_code == reply.status
    assert str(info.value) == expected
    assert_clean(info.value, logs)
    (warning,) = [r for r in logs.records if r.levelno == logging.WARNING]
    assert warning.__dict__["status_code"] == reply.status
    assert len(fake.seen) == 1  # the client itself never retries


async def test_429_blocks_the_token_for_records_and_events_alike(
    fake: FakeClever, base_url: str, logs: pytest.LogCaptureFixture
) -> None:
    reset = math.ceil(time.time()) + 2
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    fake.push(Reply(429, headers, b'{"message": "Too Many Requests"}'))
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverRateLimited) as info:
            await clever.list_records(TOKEN, "users", limit=100)
        assert info.value.reset_at == reset
        assert_clean(info.value, logs)
        assert clever.pacer.delay_for(token_key(TOKEN)) > 0
        # the same bucket at Clever: an events poll with the token waits too
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(clever.list_events(TOKEN), timeout=0.3)
        page = await clever.list_records(TOKEN, "users", limit=100)
    assert len(page.records) == 100
    assert len(fake.seen) == 2
    assert fake.seen[1].at >= reset - 0.05, "a request went out before the 429's reset"


BAD_BODIES = [
    pytest.param(Reply(200, {"content-type": HTML}, b"<html><body>Hi</body></html>"), id="html"),
    pytest.param(Reply(200, {"content-type": JSON}, b'{"data": [{"data": {"id": "58'), id="cut"),
    pytest.param(Reply(200, {"content-type": TEXT}, b"OK"), id="plain-text"),
    pytest.param(Reply(200, {"content-type": JSON}, b""), id="empty"),
    pytest.param(Reply(200, {"content-type": JSON}, b'{"data": {"id": 1}}'), id="wrong-shape"),
    pytest.param(Reply(200, {"content-type": JSON}, b'{"data": [{"data": {}}]}'), id="no-id"),
    pytest.param(Reply(200, {"content-type": JSON}, b'{"resources": []}'), id="resources-shape"),
    pytest.param(
        Reply(200, {"content-type": TEXT}, f"your token {TOKEN} is fine".encode()),
        id="text-echoing-token",
    ),
]


@pytest.mark.parametrize("reply", BAD_BODIES)
async def test_bad_bodies(
    fake: FakeClever, base_url: str, logs: pytest.LogCaptureFixture, reply: Reply
) -> None:
    fake.push(reply)
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverBadBody) as info:
            await clever.list_records(TOKEN, "users")
    assert_clean(info.value, logs)
    (warning,) = [r for r in logs.records if r.levelno == logging.WARNING]
    assert warning.__dict__["status_code"] == 200
    assert warning.__dict__["path"] == "/v3.1/users"


async def _endless(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": ['
        while not await request.is_disconnected():
            yield b" " * 65536

    return StreamingResponse(chunks(), media_type="application/json")


async def _declared(request: Request) -> Response:
    return Response(b"{}", headers={"Content-Length": str(50 * 1024 * 1024)})


async def test_an_oversize_page_is_abandoned_at_the_cap(logs: pytest.LogCaptureFixture) -> None:
    routes = [Route("/v3.1/sections", _endless), Route("/v3.1/users", _declared)]
    with serve(Starlette(routes=routes)) as srv:
        async with CleverClient(srv.url) as clever:
            with pytest.raises(CleverResponseTooLarge) as endless:
                await clever.list_records(TOKEN, "sections", limit=2)
            with pytest.raises(CleverResponseTooLarge) as declared:
                await clever.list_records(TOKEN, "users", limit=1000)
    cap = RESPONSE_BASE_BYTES + 2 * RESPONSE_BYTES_PER_EVENT
    assert endless.value.limit == 2
    assert f"larger than {cap:,} bytes (the cap for 2 sections)" in str(endless.value)
    assert declared.value.limit == 1000
    assert str(declared.value).startswith("GET /v3.1/users: ")
    assert_no_token(endless.value, declared.value, caplog=logs)


async def test_connection_refused(logs: pytest.LogCaptureFixture) -> None:
    async with CleverClient(f"http://127.0.0.1:{free_port()}") as clever:
        with pytest.raises(CleverTransportError, match=r"GET /v3.1/terms failed \(ConnectError\)"):
            await clever.list_records(TOKEN, "terms")
    assert_no_token(caplog=logs)


BAD_ARGUMENTS = [
    pytest.param({"record_type": "events"}, "record_type", id="events"),
    pytest.param({"record_type": "Users"}, "record_type", id="upper-case-type"),
    pytest.param({"record_type": "users/../events"}, "record_type", id="path-in-type"),
    pytest.param({"record_type": ""}, "record_type", id="empty-type"),
    pytest.param({"limit": 0}, "limit", id="limit-0"),
    pytest.param({"limit": 10_001}, "limit", id="limit-over-max"),
    pytest.param({"limit": True}, "limit", id="limit-bool"),
    pytest.param({"limit": "100"}, "limit", id="limit-str"),
    pytest.param({"starting_after": ""}, "starting_after", id="after-empty"),
    pytest.param({"starting_after": "../../oauth"}, "starting_after", id="after-path"),
    pytest.param({"starting_after": USERS_1_LAST.upper()}, "starting_after", id="after-upper"),
    pytest.param({"starting_after": USERS_1_LAST[:-1]}, "starting_after", id="after-short"),
    pytest.param({"starting_after": USERS_1_LAST + " "}, "starting_after", id="after-space"),
    pytest.param({"token": ""}, "token", id="token-empty"),
    pytest.param({"token": f"{TOKEN}\r\nX-Evil: 1"}, "token", id="token-header-injection"),
]


@pytest.mark.parametrize(("arguments", "fragment"), BAD_ARGUMENTS)
async def test_bad_arguments_never_reach_the_network(
    fake: FakeClever, base_url: str, arguments: dict[str, Any], fragment: str
) -> None:
    call: dict[str, Any] = {"token": TOKEN, "record_type": "users"} | arguments
    async with CleverClient(base_url) as clever:
        with pytest.raises(ValueError, match=fragment) as info:
            await clever.list_records(call.pop("token"), call.pop("record_type"), **call)
    assert_no_token(info.value)
    assert fake.seen == []


async def test_limit_bounds_are_accepted(fake: FakeClever, base_url: str) -> None:
    fake.push(EMPTY, EMPTY)
    async with CleverClient(base_url) as clever:
        await clever.list_records(TOKEN, "courses", limit=1)
        await clever.list_records(TOKEN, "courses", limit=10_000)
    assert [s.query["limit"] for s in fake.seen] == ["1", "10000"]
