"""A webhook receiver for tests: records every request and answers as told."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str


@dataclass
class Receiver:
    """``responder(n)`` gives (status, headers, delay) for the n-th request (0-based)."""

    responder: Callable[[int], tuple[int, dict[str, str], float]] = lambda n: (204, {}, 0.0)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                n = len(self.received)
                self.received.append(Received(dict(request.headers), body, request.url.path))
            status, headers, delay = self.responder(n)
            if delay:
                await asyncio.sleep(delay)
            return Response(
                status_code=status, headers=headers, content=b"" if status == 204 else b"ok"
            )

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every received body, each verified as a receiver would (raises if one fails)."""
        with self.lock:
            received = list(self.received)
        webhook = Webhook(secret)
        return [webhook.verify(r.body, r.headers) for r in received]

    def event_ids(self) -> list[str]:
        with self.lock:
            return [r.headers["webhook-id"] for r in self.received]
