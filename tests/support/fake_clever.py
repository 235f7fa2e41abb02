"""A small Starlette fake of api.clever.com for the ``CleverClient`` tests: it replays recorded
responses (``clever-recorded/``) for the requests it knows, scripted replies before them, and
checks that what the client raises and logs is short, clean and free of the token."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay._exceptions import CleverError
from tests.support.servers import ServerThread, serve
from tests.support.simulator import RECORDED

TOKEN = "tok_SUPERSECRET_0123456789abcdef"
JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class Seen:
    at: float
    path: str
    query: dict[str, str]
    authorization: str | None


#: a request as the fake keys its replay: path and the query's (name, value) pairs
ReplayKey = tuple[str, frozenset[tuple[str, str]]]


def recorded_reply(name: str) -> Reply:
    """The response of a recording, ``name`` relative to ``clever-recorded/``
    (``data-api/users.json``); a JSON body is sent re-encoded, as compact JSON."""
    response = json.loads((RECORDED / name).read_text())["response"]
    body = response["body"]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return Reply(status=response["status"], headers=dict(response["headers"]), body=raw)


class FakeClever:
    """Scripted replies first (FIFO), else the replay (a recording's name or a ``Reply``), else
    an Express-style 404."""

    def __init__(self, replay: Mapping[ReplayKey, str | Reply]) -> None:
        self.replay = replay
        self.lock = threading.Lock()
        self.script: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.endpoint)])

    def reset(self) -> None:
        with self.lock:
            self.script.clear()
            self.seen.clear()

    def push(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    async def endpoint(self, request: Request) -> Response:
        with self.lock:
            self.seen.append(
                Seen(
                    at=time.time(),
                    path=request.url.path,
                    query=dict(request.query_params),
                    authorization=request.headers.get("authorization"),
                )
            )
            reply = self.script.popleft() if self.script else None
        if reply is None:
            key = (request.url.path, frozenset(request.query_params.items()))
            known = self.replay.get(key)
            if known is None:
                reply = Reply(404, {"content-type": HTML}, b"<pre>Cannot GET x</pre>")
            else:
                reply = recorded_reply(known) if isinstance(known, str) else known
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-type"}
        return Response(
            reply.body,
            status_code=reply.status,
            headers=headers,
            media_type=reply.headers.get("content-type"),
        )


@contextmanager
def serve_fake(
    replay: Mapping[ReplayKey, str | Reply],
) -> Iterator[tuple[FakeClever, ServerThread]]:
    """A ``FakeClever`` served on 127.0.0.1 (one per test module: reset it per test)."""
    fake = FakeClever(replay)
    with serve(fake.app) as srv:
        yield fake, srv


def assert_no_token(*texts: object, caplog: pytest.LogCaptureFixture | None = None) -> None:
    for text in texts:
        assert TOKEN not in str(text)
        assert TOKEN not in repr(text)
    if caplog is not None:
        for record in caplog.records:
            assert TOKEN not in record.getMessage()
            assert TOKEN not in repr(vars(record))


def assert_clean(error: CleverError, caplog: pytest.LogCaptureFixture) -> None:
    """One short line, no markup, no token: what a district's ``last_error`` may show."""
    message = str(error)
    assert "\n" not in message
    assert "<" not in message
    assert len(getattr(error, "body_excerpt", "")) <= 200
    assert len(message) <= 320
    assert_no_token(error, getattr(error, "body_excerpt", ""), *error.args, caplog=caplog)
