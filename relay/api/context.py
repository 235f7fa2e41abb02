"""What every handler needs, built once per process and kept on ``app.state``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from arq.connections import ArqRedis
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from relay.api.auth import Authenticator, TokenCodec
from relay.api.errors import ApiError, describe_validation_error
from relay.api.limits import TokenBuckets
from relay.api.metrics import MetricsEndpoint
from relay.api.pagination import CursorCodec
from relay.db import Database
from relay.delivery.sender import WebhookSender
from relay.delivery.targets import TargetPolicy
from relay.queue import RedisQueue
from relay.queue.gates import Gates
from relay.settings import Settings

M = TypeVar("M", bound=BaseModel)


@dataclass
class Services:
    settings: Settings
    db: Database
    authenticator: Authenticator
    tokens: TokenCodec
    cursors: CursorCodec
    target_policy: TargetPolicy
    sender: WebhookSender
    metrics: MetricsEndpoint
    test_sends: TokenBuckets
    redis: ArqRedis | None = None
    queue: RedisQueue | None = None
    gates: Gates | None = None


def services(request: Request) -> Services:
    value = request.app.state.services
    assert isinstance(value, Services)
    return value


def _nul_in(data: dict[str, Any]) -> str | None:
    """The dotted path of the first key or string holding NUL (which no field accepts and
    PostgreSQL refuses in text), or None."""
    stack: list[tuple[str, object]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            return where or "request body"
        items = (
            value.items()
            if isinstance(value, dict)
            else enumerate(value)
            if isinstance(value, list)
            else ()
        )
        prefix = f"{where}." if where else ""
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                return f"{prefix}{key!r}"
            stack.append((f"{prefix}{key}", item))
    return None


async def read_json(request: Request, model: type[M]) -> M:
    """Parse the body as ``model``: 400 for what is not JSON, 422 naming each bad field."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "request body: expected a JSON object, got nothing")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body: not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "request body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"request body: expected a JSON object, got {type(data).__name__}")
    if (where := _nul_in(data)) is not None:
        raise ApiError(422, f"{where}: must not contain a NUL character (\\u0000)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, describe_validation_error(exc)) from None
