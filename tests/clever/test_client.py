"""CleverClient over real HTTP against a small Starlette fake that replays recorded responses."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterator

import aiohttp
import pytest

from relay._exceptions import (
    CleverBadBody,
    CleverError,
    CleverRateLimited,
    CleverResponseError,
    CleverServerError,
    CleverTransportError,
    CleverUnauthorized,
)
from relay.clever.client import CleverClient, rate_limit_reset
from relay.clever.ratelimit import TokenPacer, token_key
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
from tests.support.servers import ServerThread, free_port

# Recorded v3.0 interactions, keyed by the v3.1 request they answer.
REPLAY: dict[ReplayKey, str | Reply] = {
    ("/v3.1/events", frozenset({("limit", "100")})): "events.json",
    ("/v3.1/events", frozenset({("limit", "25")})): "events_with_limit.json",
    (
        "/v3.1/events",
        frozenset({("limit", "100"), ("starting_after", "64206e4531f12f05cc490ffd")}),
    ): "events_next-2.json",
    (
        "/v3.1/events",
        frozenset({("limit", "100"), ("starting_after", "640df950d306111b2385f72b")}),
    ): "events_with_starting_after.json",
    ("/v3.1/events/64206e4431f12f05cc49076f", frozenset()): "event.json",
}


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


# --- happy paths, replayed from real recordings ---------------------------------------------


async def test_list_events_replays_first_page(
    fake: FakeClever, base_url: str, logs: pytest.LogCaptureFixture
) -> None:
    async with CleverClient(base_url) as clever:
        page = await clever.list_events(TOKEN, limit=100)
    assert len(page.events) == 100
    assert page.request_id == "cbeed16777822dd18b5babaaa33a8124"
    assert page.rate_limit is not None
    assert page.rate_limit.remaining == 1195
    assert page.last_id == "64206e4531f12f05cc490ffd"
    (seen,) = fake.seen
    assert seen.path == "/v3.1/events"
    assert seen.query == {"limit": "100"}
    assert seen.authorization == f"Bearer {TOKEN}"
    # one DEBUG line per request, with structured fields and no token
    (record,) = [r for r in logs.records if r.levelno == logging.DEBUG]
    assert record.name == "relay.clever"
    assert record.__dict__["clever_request_id"] == "cbeed16777822dd18b5babaaa33a8124"
    assert record.__dict__["status_code"] == 200
    assert record.__dict__["duration_ms"] >= 0
    assert record.__dict__["token_key"] == token_key(TOKEN)
    assert_no_token(caplog=logs)


async def test_list_events_follows_cursor(fake: FakeClever, base_url: str) -> None:
    async with CleverClient(base_url) as clever:
        first = await clever.list_events(TOKEN, limit=100)
        assert first.last_id is not None
        second = await clever.list_events(TOKEN, starting_after=first.last_id, limit=100)
    assert len(second.events) == 100
    assert second.events[0].id > first.last_id
    assert fake.seen[1].query == {"limit": "100", "starting_after": first.last_id}
    updated = [e for e in second.events if "previous_attributes" in e.raw["data"]]
    assert len(updated) == 100


async def test_default_limit_is_sent(fake: FakeClever, base_url: str) -> None:
    fake.push(Reply(200, {"content-type": JSON}, b'{"data": [], "links": []}'))
    async with CleverClient(base_url) as clever:
        page = await clever.list_events(TOKEN)
    assert page.events == []
    assert fake.seen[0].query == {"limit": "1000"}


async def test_get_event(fake: FakeClever, base_url: str) -> None:
    async with CleverClient(base_url) as clever:
        event = await clever.get_event(TOKEN, "64206e4431f12f05cc49076f")
    assert event.type == "districts.updated"
    assert event.raw["data"]["previous_attributes"] == {"last_sync": "2023-03-23T16:08:33.459Z"}
    assert fake.seen[0].path == "/v3.1/events/64206e4431f12f05cc49076f"


async def test_latest_event_id(fake: FakeClever, base_url: str) -> None:
    body = json.loads(recorded_reply("events_next-2.json").body)
    newest = {"data": body["data"][-1:], "links": []}
    fake.push(Reply(200, {"content-type": JSON}, json.dumps(newest).encode()))
    fake.push(Reply(200, {"content-type": JSON}, b'{"data": [], "links": []}'))
    async with CleverClient(base_url) as clever:
        assert await clever.latest_event_id(TOKEN) == "64206e4531f12f05cc491061"
        assert await clever.latest_event_id(TOKEN) is None
    assert fake.seen[0].query == {"ending_before": "last", "limit": "1"}


async def test_shared_session_is_not_closed(fake: FakeClever, base_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with CleverClient(base_url, session=http) as clever:
            await clever.get_event(TOKEN, "64206e4431f12f05cc49076f")
        assert not http.closed
        await CleverClient(base_url, session=http).get_event(TOKEN, "64206e4431f12f05cc49076f")


# --- error mapping --------------------------------------------------------------------------


ERROR_CASES = [
    pytest.param(
        Reply(401, {"content-type": JSON}, json.dumps({"message": f"bad {TOKEN}"}).encode()),
        CleverUnauthorized,
        "rejected the district token (401): bad [redacted]",
        id="401-json-echoing-token",
    ),
    pytest.param(
        Reply(500, {"content-type": JSON}, b'{"message": "Internal server error"}'),
        CleverServerError,
        "Clever answered 500: Internal server error",
        id="500-json",
    ),
    pytest.param(
        Reply(
            502,
            {"content-type": HTML},
            b"<html><head><title>502 Bad Gateway</title></head>"
            b"<body><center><h1>502 Bad Gateway</h1></center></body></html>",
        ),
        CleverServerError,
        "Clever answered 502: 502 Bad Gateway 502 Bad Gateway",
        id="502-html",
    ),
    pytest.param(
        Reply(503, {}, b""),
        CleverServerError,
        "Clever answered 503",
        id="503-empty",
    ),
    pytest.param(
        Reply(404, {"content-type": TEXT}, b"Cannot GET /v3.1/events"),
        CleverResponseError,
        "Clever answered 404: Cannot GET /v3.1/events",
        id="404-plain-text",
    ),
    pytest.param(
        recorded_reply("resources_student.json"),
        CleverResponseError,
        "Clever answered 404: Error Cannot GET /v3.0/resources",
        id="404-recorded-html",
    ),
    pytest.param(
        Reply(400, {"content-type": JSON}, json.dumps({"message": "x" * 5000}).encode()),
        CleverResponseError,
        "Clever answered 400: xxxx",
        id="400-huge-message",
    ),
    pytest.param(
        Reply(413, {"content-type": JSON}, b'{"message": "limit too high"}'),
        CleverResponseError,
        "Clever answered 413: limit too high",
        id="413",
    ),
    pytest.param(
        Reply(302, {"location": "https://elsewhere.example/"}, b""),
        CleverResponseError,
        "Clever answered 302",
        id="redirect-not-followed",
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
            await clever.list_events(TOKEN)
    error = info.value
    assert type(error) is error_type
    assert error.status_code == reply.status
    assert expected in str(error)
    assert str(error).startswith("GET /v3.1/events: ")
    assert_clean(error, logs)
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].__dict__["status_code"] == reply.status
    assert len(fake.seen) == 1  # the client itself never retries


BAD_BODIES = [
    pytest.param(Reply(200, {"content-type": HTML}, b"<html><body>Hi</body></html>"), id="html"),
    pytest.param(Reply(200, {"content-type": JSON}, b'{"data": [{"data": {"id": "64'), id="cut"),
    pytest.param(Reply(200, {"content-type": TEXT}, b"OK"), id="plain-text"),
    pytest.param(Reply(200, {"content-type": JSON}, b""), id="empty"),
    pytest.param(Reply(200, {"content-type": JSON}, b'{"data": {"id": 1}}'), id="wrong-shape"),
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
            await clever.list_events(TOKEN)
    assert_clean(info.value, logs)
    (warning,) = [r for r in logs.records if r.levelno == logging.WARNING]
    assert warning.__dict__["status_code"] == 200
    assert warning.__dict__["path"] == "/v3.1/events"


async def test_bad_body_on_get_event(fake: FakeClever, base_url: str) -> None:
    fake.push(Reply(200, {"content-type": HTML, "clever-request-id": "r-9"}, b"<p>nope</p>"))
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverBadBody) as info:
            await clever.get_event(TOKEN, "64206e4431f12f05cc49076f")
    assert info.value.request_id == "r-9"
    assert info.value.body_excerpt == "nope"


async def test_connection_refused(logs: pytest.LogCaptureFixture) -> None:
    async with CleverClient(f"http://127.0.0.1:{free_port()}") as clever:
        with pytest.raises(CleverTransportError) as info:
            await clever.list_events(TOKEN)
    assert "ConnectError" in str(info.value)
    assert_clean(info.value, logs)
    assert any(r.levelno == logging.WARNING for r in logs.records)


async def test_timeout(fake: FakeClever, base_url: str, logs: pytest.LogCaptureFixture) -> None:
    fake.push(Reply(200, {"content-type": JSON}, b'{"data": []}', delay=2.0))
    async with CleverClient(base_url, timeout=0.2) as clever:
        with pytest.raises(CleverTransportError, match="timed out") as info:
            await clever.list_events(TOKEN)
    assert_clean(info.value, logs)


# --- 429 and the pacer ------------------------------------------------------------------------


async def test_429_blocks_the_token_until_reset(
    fake: FakeClever, base_url: str, logs: pytest.LogCaptureFixture
) -> None:
    reset = math.ceil(time.time()) + 2
    fake.push(
        Reply(
            429,
            {
                "x-ratelimit-limit": "1200",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-bucket": "bearer",
            },
            b"",
        )
    )
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverRateLimited) as info:
            await clever.list_events(TOKEN, limit=100)
        error = info.value
        assert error.reset_at == reset
        assert error.status_code == 429
        assert error.body_excerpt == ""
        assert_clean(error, logs)
        assert clever.pacer.delay_for(token_key(TOKEN)) > 0
        # the next call is held back by the pacer, then succeeds
        page = await clever.list_events(TOKEN, limit=100)
    assert len(page.events) == 100
    assert len(fake.seen) == 2
    assert fake.seen[1].at >= reset - 0.05, "a request went out before the 429's reset"


async def test_429_does_not_hold_other_tokens(fake: FakeClever, base_url: str) -> None:
    reset = math.ceil(time.time()) + 30
    fake.push(Reply(429, {"x-ratelimit-reset": str(reset)}, b""))
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverRateLimited):
            await clever.list_events(TOKEN, limit=100)
        await asyncio.wait_for(clever.list_events("tok_other", limit=100), timeout=5)
        assert clever.pacer.delay_for(token_key(TOKEN)) > 20


async def test_429_shared_pacer_blocks_other_clients(fake: FakeClever, base_url: str) -> None:
    pacer = TokenPacer()
    fake.push(Reply(429, {"x-ratelimit-reset": str(math.ceil(time.time()) + 30)}, b""))
    async with CleverClient(base_url, pacer=pacer) as one:
        with pytest.raises(CleverRateLimited):
            await one.list_events(TOKEN, limit=100)
    async with CleverClient(base_url, pacer=pacer) as two:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(two.list_events(TOKEN, limit=100), timeout=0.3)
    assert len(fake.seen) == 1


async def test_429_without_headers_waits_a_minute(fake: FakeClever, base_url: str) -> None:
    fake.push(Reply(429, {}, b""))
    before = time.time()
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverRateLimited) as info:
            await clever.list_events(TOKEN)
    assert before + 59 <= info.value.reset_at <= time.time() + 61


async def test_429_retry_after_later_than_reset_wins(fake: FakeClever, base_url: str) -> None:
    now = time.time()
    fake.push(Reply(429, {"x-ratelimit-reset": str(math.ceil(now) + 2), "retry-after": "40"}, b""))
    async with CleverClient(base_url) as clever:
        with pytest.raises(CleverRateLimited) as info:
            await clever.list_events(TOKEN)
    assert info.value.reset_at >= now + 40


def test_rate_limit_reset_rules() -> None:
    now = 1_000_000.0
    assert rate_limit_reset({"x-ratelimit-reset": "1000030"}, now) == 1000030
    assert rate_limit_reset({"x-ratelimit-reset": "1000030", "retry-after": "5"}, now) == 1000030
    assert rate_limit_reset({"x-ratelimit-reset": "1000030", "retry-after": "50"}, now) == now + 50
    assert rate_limit_reset({"retry-after": "7"}, now) == now + 7
    assert rate_limit_reset({}, now) == now + 60
    assert rate_limit_reset({"x-ratelimit-reset": "garbage"}, now) == now + 60
    # a reset already past (clock skew) still holds off the immediate retry
    assert rate_limit_reset({"x-ratelimit-reset": "999990"}, now) == now + 1


async def test_low_remaining_headers_are_recorded(fake: FakeClever, base_url: str) -> None:
    headers = {
        "content-type": JSON,
        "x-ratelimit-limit": "1200",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(math.ceil(time.time()) + 30),
    }
    fake.push(Reply(200, headers, b'{"data": []}'))
    async with CleverClient(base_url) as clever:
        await clever.list_events(TOKEN)
        assert clever.pacer.delay_for(token_key(TOKEN)) > 20


# --- input validation: nothing reaches the network -------------------------------------------


@pytest.mark.parametrize("limit", [0, -1, 10_001, True])
async def test_limit_is_validated(fake: FakeClever, base_url: str, limit: int) -> None:
    async with CleverClient(base_url) as clever:
        with pytest.raises(ValueError, match="limit"):
            await clever.list_events(TOKEN, limit=limit)
    assert fake.seen == []


async def test_limit_bounds_are_accepted(fake: FakeClever, base_url: str) -> None:
    fake.push(Reply(200, {"content-type": JSON}, b'{"data": []}'))
    fake.push(Reply(200, {"content-type": JSON}, b'{"data": []}'))
    async with CleverClient(base_url) as clever:
        await clever.list_events(TOKEN, limit=1)
        await clever.list_events(TOKEN, limit=10_000)
    assert [s.query["limit"] for s in fake.seen] == ["1", "10000"]


async def test_ids_are_validated(fake: FakeClever, base_url: str) -> None:
    async with CleverClient(base_url) as clever:
        with pytest.raises(ValueError, match="starting_after"):
            await clever.list_events(TOKEN, starting_after="../../oauth")
        with pytest.raises(ValueError, match="event_id"):
            await clever.get_event(TOKEN, "64206e44/../x")
    assert fake.seen == []


@pytest.mark.parametrize("token", ["", "tok with space", f"{TOKEN}\r\nX-Evil: 1"])
async def test_bad_tokens_are_refused_without_echo(
    fake: FakeClever, base_url: str, token: str
) -> None:
    async with CleverClient(base_url) as clever:
        with pytest.raises(ValueError, match="token") as info:
            await clever.list_events(token)
    assert_no_token(info.value)
    assert fake.seen == []


def test_client_repr_is_safe() -> None:
    assert repr(CleverClient("https://api.clever.com/")) == "CleverClient('https://api.clever.com')"


def test_exceptions_are_in_the_tree() -> None:
    for cls in (CleverUnauthorized, CleverRateLimited, CleverServerError):
        assert issubclass(cls, CleverResponseError)
    assert issubclass(CleverBadBody, CleverError)
    assert issubclass(CleverTransportError, CleverError)
