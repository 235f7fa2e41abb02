"""WebhookSender against real uvicorn receivers: every outcome the delivery log must show."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from relay.delivery.sender import AttemptOutcome, WebhookSender
from relay.delivery.signing import generate_secret, webhook_body, webhook_headers
from relay.delivery.targets import TargetPolicy
from tests.support.servers import ServerThread, free_port, serve

BIG_ERROR = b"E" * 1023 + "\u00e9".encode() * 2000  # the 1 KiB cut splits a 2-byte character
RECEIVED: list[tuple[dict[str, str], bytes]] = []
RETRY_DATE = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _respond(
    send: Any, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def receiver(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    body = await _read_body(receive)
    if path == "/ok":
        await _respond(send, 204)
    elif path == "/echo":
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        RECEIVED.append((headers, body))
        await _respond(send, 200, b'{"received":true}')
    elif path == "/500":
        await _respond(send, 500, BIG_ERROR, [(b"content-type", b"text/plain")])
    elif path == "/410":
        await _respond(send, 410, b"gone")
    elif path == "/302":
        await _respond(send, 302, b"", [(b"location", b"/ok")])
    elif path == "/429":
        await _respond(send, 429, b"", [(b"retry-after", b"7")])
    elif path == "/503":
        await _respond(send, 503, b"busy", [(b"retry-after", RETRY_DATE.encode())])
    elif path in ("/hang", "/hang-body"):
        if path == "/hang-body":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        # Wait until the client gives up and disconnects (bounded, so shutdown never hangs).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receive(), timeout=5)
    elif path == "/huge":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        for _ in range(800):  # 50 MiB if anyone were to read it all
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await _respond(send, 404)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with serve(receiver) as srv:
        yield srv


ANY = TargetPolicy(loopback=True)  # the receivers are on 127.0.0.1


async def _send(url: str, body: bytes = b"{}", timeout: float = 5.0) -> AttemptOutcome:
    async with WebhookSender(timeout=timeout, policy=ANY) as sender:
        return await sender.send(url, {"content-type": "application/json"}, body)


async def test_2xx_succeeds(server: ServerThread) -> None:
    outcome = await _send(server.url + "/ok")
    assert outcome.status_code == 204
    assert outcome.succeeded
    assert not outcome.gone
    assert outcome.error is None
    assert outcome.response_excerpt == ""
    assert 0 <= outcome.duration_ms < 5000


async def test_body_and_signature_arrive_exactly(server: ServerThread) -> None:
    secret = generate_secret()
    event: dict[str, Any] = {
        "id": "64206e4531f12f05cc490fa5",
        "type": "users.updated",
        "data": {"object": {}},
    }
    body = webhook_body(event, "d1")
    headers = webhook_headers([secret], event["id"], body)
    RECEIVED.clear()
    async with WebhookSender(timeout=5, policy=ANY, user_agent="relay-test/1") as sender:
        outcome = await sender.send(server.url + "/echo", headers, body)
    assert outcome.succeeded
    assert outcome.status_code == 200
    assert outcome.response_excerpt == '{"received":true}'
    (got_headers, got_body) = RECEIVED[-1]
    assert got_body == body
    assert got_headers["user-agent"] == "relay-test/1"
    assert got_headers["content-type"] == "application/json"
    assert Webhook(secret).verify(got_body, got_headers) == {**event, "district": "d1"}


async def test_500_with_excerpt_truncated_to_1_kib(server: ServerThread) -> None:
    outcome = await _send(server.url + "/500")
    assert outcome.status_code == 500
    assert not outcome.succeeded
    assert outcome.error == "http 500 Internal Server Error"
    assert outcome.response_excerpt == "E" * 1023 + "\ufffd"


async def test_410_is_gone(server: ServerThread) -> None:
    outcome = await _send(server.url + "/410")
    assert outcome.gone
    assert not outcome.succeeded
    assert outcome.status_code == 410
    assert outcome.response_excerpt == "gone"


async def test_302_is_not_followed(server: ServerThread) -> None:
    outcome = await _send(server.url + "/302")
    assert outcome.status_code == 302
    assert not outcome.succeeded
    assert outcome.error == "redirect: 302 to /ok not followed"


async def test_hang_past_timeout(server: ServerThread) -> None:
    started = time.monotonic()
    outcome = await _send(server.url + "/hang", timeout=0.5)
    assert time.monotonic() - started < 3
    assert outcome.status_code is None
    assert outcome.error == "timeout: no response within 0.5s"
    assert not outcome.succeeded
    assert 400 <= outcome.duration_ms < 3000


async def test_2xx_whose_body_hangs_is_a_timeout(server: ServerThread) -> None:
    outcome = await _send(server.url + "/hang-body", timeout=0.5)
    assert outcome.status_code == 200
    assert outcome.error == "timeout: response body not received within 0.5s"
    assert not outcome.succeeded


async def test_connection_refused() -> None:
    outcome = await _send(f"http://127.0.0.1:{free_port()}/")
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("connection refused")
    assert not outcome.succeeded


async def test_429_retry_after_captured(server: ServerThread) -> None:
    outcome = await _send(server.url + "/429")
    assert outcome.status_code == 429
    assert outcome.retry_after == "7"
    assert outcome.error == "http 429 Too Many Requests"
    outcome = await _send(server.url + "/503")
    assert outcome.status_code == 503
    assert outcome.retry_after == RETRY_DATE


async def test_huge_body_is_not_buffered(server: ServerThread) -> None:
    started = time.monotonic()
    outcome = await _send(server.url + "/huge")
    assert outcome.succeeded
    assert outcome.response_excerpt == "x" * 1024
    assert time.monotonic() - started < 2


async def test_dns_failure() -> None:
    outcome = await _send("http://does-not-exist.invalid/")
    assert outcome.error is not None
    assert outcome.error.startswith("dns: cannot resolve does-not-exist.invalid")


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[fe80::1]/"],
)
async def test_literal_metadata_address_refused(url: str) -> None:
    outcome = await _send(url)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("target not allowed: ")
    assert "metadata" in outcome.error


async def test_name_resolving_to_metadata_refused(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = {"hooks.test": "127.0.0.1", "metadata.test": "169.254.169.254"}
    real = asyncio.get_running_loop().getaddrinfo

    async def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], int(port)))]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    async with WebhookSender(timeout=5, policy=ANY) as sender:
        ok = await sender.send(f"http://hooks.test:{server.port}/ok", {}, b"{}")
        assert ok.succeeded, ok
        refused = await sender.send(f"http://metadata.test:{server.port}/ok", {}, b"{}")
    assert refused.status_code is None
    assert refused.error is not None
    assert refused.error.startswith("target not allowed: metadata.test (169.254.169.254)")
    # And a policy narrowing targets refuses the loopback name, at connection time.
    narrow = TargetPolicy.from_env_value("10.0.0.0/8")
    async with WebhookSender(timeout=5, policy=narrow) as sender:
        outcome = await sender.send(f"http://hooks.test:{server.port}/ok", {}, b"{}")
    assert outcome.error is not None
    assert "outside RELAY_ALLOWED_TARGETS" in outcome.error


@pytest.mark.parametrize("url", ["ftp://example.com/", "not a url", "http:///x"])
async def test_invalid_urls_are_outcomes(url: str) -> None:
    outcome = await _send(url)
    assert outcome.error is not None
    assert outcome.error.startswith("invalid url")


async def test_many_concurrent_sends_share_one_session(server: ServerThread) -> None:
    async with WebhookSender(timeout=5, policy=ANY) as sender:
        outcomes = await asyncio.gather(
            *(sender.send(server.url + "/ok", {}, b"{}") for _ in range(300))
        )
    assert all(o.succeeded for o in outcomes)


async def test_send_outside_context_is_a_programming_error() -> None:
    sender = WebhookSender(timeout=1, policy=ANY)
    with pytest.raises(RuntimeError, match="not open"):
        await sender.send("http://127.0.0.1/", {}, b"")
