"""Token discovery against a fake clever.com that replays the recorded token list."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay._exceptions import (
    CleverBadBody,
    CleverRateLimited,
    CleverServerError,
    CleverTransportError,
    CleverUnauthorized,
)
from relay.clever.tokens import DistrictToken, fetch_district_tokens
from tests.support.servers import ServerThread, free_port, serve

RECORDED = Path("/work/shared/clever-recorded/tokens.json")
CLIENT_ID = "app_client_id_123"
SECRET = "s3cr3t_client_SECRET_value"
JSON = "application/json; charset=utf-8"
DEMO_DISTRICT = "58da8a43cc70ab00017a1a87"


def recorded_body() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(RECORDED.read_text())["response"]["body"]
    return body


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": JSON})


@dataclass
class Seen:
    path: str
    query: str
    authorization: str | None


class FakeOAuth:
    """Scripted replies first, else the recorded token list."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.app = Starlette(routes=[Route("/oauth/tokens", self.tokens)])

    async def tokens(self, request: Request) -> Response:
        with self.lock:
            self.seen.append(
                Seen(request.url.path, request.url.query, request.headers.get("authorization"))
            )
            reply = self.script.popleft() if self.script else None
        if reply is None:
            reply = Reply(200, json.dumps(recorded_body()).encode())
        return Response(reply.body, status_code=reply.status, headers=reply.headers)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeOAuth, ServerThread]]:
    fake = FakeOAuth()
    with serve(fake.app) as srv:
        yield fake, srv


@pytest.fixture
def fake(server: tuple[FakeOAuth, ServerThread]) -> FakeOAuth:
    with server[0].lock:
        server[0].script.clear()
        server[0].seen.clear()
    return server[0]


@pytest.fixture
def url(server: tuple[FakeOAuth, ServerThread]) -> str:
    return server[1].url


def assert_no_secret(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    for text in (str(error), repr(error), *error.args, getattr(error, "body_excerpt", "")):
        assert SECRET not in str(text)
        assert "REDACTED" not in str(text)  # an access_token value from the body
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(vars(record))


async def test_recorded_token_list(fake: FakeOAuth, url: str) -> None:
    tokens = await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert len(tokens) == 3
    assert [t.district_id for t in tokens] == [
        DEMO_DISTRICT,
        "5d0a9e5d0958b300014e49d2",
        "62817af12d430f5d54001f99",
    ]
    first = tokens[0]
    assert first.access_token == "REDACTED"
    assert "read:students_basic" in first.scopes
    assert isinstance(first.scopes, tuple)
    assert first.created == datetime(2022, 6, 23, 21, 56, 32, 335000, tzinfo=UTC)
    (seen,) = fake.seen
    assert seen.query == "owner_type=district"
    expected = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert seen.authorization == f"Basic {expected}"


async def test_one_district(fake: FakeOAuth, url: str) -> None:
    tokens = await fetch_district_tokens(url + "/", CLIENT_ID, SECRET, district=DEMO_DISTRICT)
    # the fake ignores the filter like a careless server would: we still get only ours
    assert [t.district_id for t in tokens] == [DEMO_DISTRICT]
    assert fake.seen[0].query == f"owner_type=district&district={DEMO_DISTRICT}"


async def test_next_links_are_followed(fake: FakeOAuth, url: str) -> None:
    body = recorded_body()
    page1 = {
        "data": body["data"][:2],
        "links": [{"rel": "next", "uri": "/oauth/tokens?owner_type=district&starting_after=x"}],
    }
    page2 = {"data": body["data"][2:], "links": [{"rel": "self", "uri": "/oauth/tokens?x"}]}
    fake.script.extend(
        [Reply(200, json.dumps(page1).encode()), Reply(200, json.dumps(page2).encode())]
    )
    tokens = await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert len(tokens) == 3
    assert [s.query for s in fake.seen] == [
        "owner_type=district",
        "owner_type=district&starting_after=x",
    ]
    assert all(s.authorization and s.authorization.startswith("Basic ") for s in fake.seen)


async def test_looping_next_link_stops(fake: FakeOAuth, url: str) -> None:
    body = recorded_body()
    body["links"] = [{"rel": "next", "uri": "/oauth/tokens?owner_type=district"}]
    fake.script.append(Reply(200, json.dumps(body).encode()))
    tokens = await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert len(tokens) == 3
    assert len(fake.seen) == 1


async def test_next_link_to_another_host_is_refused(fake: FakeOAuth, url: str) -> None:
    body = recorded_body()
    body["links"] = [{"rel": "next", "uri": "https://evil.example/oauth/tokens"}]
    fake.script.append(Reply(200, json.dumps(body).encode()))
    with pytest.raises(CleverBadBody, match="next"):
        await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert len(fake.seen) == 1


async def test_401_names_client_credentials(
    fake: FakeOAuth, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay.clever")
    body = json.dumps({"message": f"invalid client {CLIENT_ID}:{SECRET}"}).encode()
    fake.script.append(Reply(401, body))
    with pytest.raises(CleverUnauthorized, match="client credentials") as info:
        await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert_no_secret(info.value, caplog)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(500, b"<h1>oops</h1>", {"content-type": "text/html"}), CleverServerError),
        (Reply(429, b"", {"x-ratelimit-reset": "9999999999"}), CleverRateLimited),
        (Reply(200, b"<html>login</html>", {"content-type": "text/html"}), CleverBadBody),
        (Reply(200, b'{"data": [{"owner": {"id"'), CleverBadBody),
        (Reply(200, b'{"data": {}}'), CleverBadBody),
    ],
)
async def test_errors_are_mapped(
    fake: FakeOAuth,
    url: str,
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
    error_type: type[Exception],
) -> None:
    fake.script.append(reply)
    with pytest.raises(error_type) as info:
        await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert_no_secret(info.value, caplog)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda item: item.pop("access_token"), id="no-token"),
        pytest.param(lambda item: item.update(access_token=5), id="token-not-str"),
        pytest.param(lambda item: item.pop("owner"), id="no-owner"),
        pytest.param(lambda item: item.update(scopes="read:all"), id="scopes-not-list"),
    ],
)
async def test_malformed_items_are_refused_without_leaking_tokens(
    fake: FakeOAuth, url: str, caplog: pytest.LogCaptureFixture, mutate: Any
) -> None:
    body = recorded_body()
    mutate(body["data"][1])
    fake.script.append(Reply(200, json.dumps(body).encode()))
    with pytest.raises(CleverBadBody, match="item 1") as info:
        await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert_no_secret(info.value, caplog)


async def test_truncated_token_list_withholds_the_excerpt(
    fake: FakeOAuth, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    whole = json.dumps(recorded_body()).replace("REDACTED", "live_token_abcdef")
    fake.script.append(Reply(200, whole[: len(whole) // 3].encode()))
    with pytest.raises(CleverBadBody, match="truncated or invalid JSON") as info:
        await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert "live_token" not in str(info.value)
    assert info.value.body_excerpt == ""
    assert_no_secret(info.value, caplog)


async def test_non_district_owners_are_skipped(fake: FakeOAuth, url: str) -> None:
    body = recorded_body()
    body["data"][0]["owner"]["type"] = "user"
    fake.script.append(Reply(200, json.dumps(body).encode()))
    tokens = await fetch_district_tokens(url, CLIENT_ID, SECRET)
    assert DEMO_DISTRICT not in [t.district_id for t in tokens]


async def test_transport_error() -> None:
    with pytest.raises(CleverTransportError):
        await fetch_district_tokens(f"http://127.0.0.1:{free_port()}", CLIENT_ID, SECRET)


def test_repr_never_shows_the_token() -> None:
    token = DistrictToken(
        district_id=DEMO_DISTRICT, access_token="live_token_value", scopes=("read:user_id",)
    )
    for text in (repr(token), str(token), repr([token]), f"{token}", f"{token!r}"):
        assert "live_token_value" not in text
        assert DEMO_DISTRICT in text
