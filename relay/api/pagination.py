"""Cursor pagination with opaque, signed cursors.

A cursor is the sort key of the last item served, signed so a client can neither forge one
nor read our keys into a contract. Keyset pagination (``WHERE id < :last``) never skips or
repeats rows while new ones arrive, unlike offsets.
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request

from relay.api.errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class CursorCodec:
    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="relay.cursor")

    def encode(self, kind: str, key: Any) -> str:
        return str(self._serializer.dumps([kind, key]))

    def decode(self, kind: str, cursor: str) -> Any:
        try:
            value = self._serializer.loads(cursor)
        except BadSignature:
            raise ApiError(404, "cursor: no such page (not a cursor this API issued)") from None
        if not isinstance(value, list) or len(value) != 2 or value[0] != kind:
            raise ApiError(404, f"cursor: no such page (not a cursor for {kind})")
        return value[1]


def parse_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(422, f"limit: must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)
