"""Clever's replies are read within a cap derived from the page size: an endless or huge body
is abandoned as it streams in, never held whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from relay._exceptions import CleverResponseTooLarge
from relay.clever.client import RESPONSE_BASE_BYTES, RESPONSE_BYTES_PER_EVENT, CleverClient
from tests.support.servers import serve

sent = {"bytes": 0}


async def endless(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": ['
        while not await request.is_disconnected():
            sent["bytes"] += 65536
            yield b" " * 65536

    return StreamingResponse(chunks(), media_type="application/json")


async def declared(request: Request) -> Response:
    return Response(b"{}", headers={"Content-Length": str(50 * 1024 * 1024)})


@pytest.mark.parametrize("limit", [10, 1000])
async def test_an_endless_page_is_abandoned_at_the_cap(limit: int) -> None:
    sent["bytes"] = 0
    cap = RESPONSE_BASE_BYTES + limit * RESPONSE_BYTES_PER_EVENT
    with serve(Starlette(routes=[Route("/v3.1/events", endless)])) as srv:
        async with CleverClient(srv.url) as clever:
            with pytest.raises(CleverResponseTooLarge, match="larger than") as raised:
                await clever.list_events("token", limit=limit)
            at_refusal = sent["bytes"]
    assert raised.value.limit == limit
    assert f"{cap:,} bytes" in str(raised.value)
    # the server got ahead of the reader by a few socket buffers at most
    assert at_refusal < cap + 16 * 1024 * 1024


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with serve(Starlette(routes=[Route("/v3.1/events", declared)])) as srv:
        async with CleverClient(srv.url) as clever:
            with pytest.raises(CleverResponseTooLarge):
                await clever.list_events("token", limit=1000)
