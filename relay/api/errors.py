"""The API's error format: ``{"error": {"code": "...", "message": "..."}}``, never a 500 for
bad input."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import StringConstraints, ValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay._exceptions import API_ERROR_CODES, ApiError

__all__ = [
    "ApiError",
    "describe_validation_error",
    "described_pattern",
    "error_response",
    "exception_handlers",
]

logger = logging.getLogger("relay.api")


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code or API_ERROR_CODES.get(status, "error"), "message": message}}
    extra = dict(headers or {})
    if status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, headers=extra or None)


#: What a constrained string must look like, in words, by its pattern: registered with
#: :func:`described_pattern` where the pattern is defined, so no error message shows a regex.
PATTERN_MEANINGS: dict[str, str] = {}

#: Fields whose value an error message must never repeat.
SECRET_FIELDS = frozenset({"token", "secret"})

_TYPE_WORDS = {
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": 'must be a list, e.g. ["users"]',
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "datetime_type": "must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z",
    "datetime_parsing": "must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z",
    "datetime_from_date_parsing": "must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def described_pattern(
    pattern: str, meaning: str, min_length: int | None = None, max_length: int | None = None
) -> StringConstraints:
    """``StringConstraints(pattern=…)`` whose mismatch reads ``<field>: <meaning>``."""
    PATTERN_MEANINGS[pattern] = meaning
    return StringConstraints(pattern=pattern, min_length=min_length, max_length=max_length)


def _plural(n: object, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _what_is_wrong(error: Any, field: str) -> str:
    """pydantic's error as a person would say it; never a regex, never pydantic's wording
    for the common cases (the rare others keep pydantic's message)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "value_error":  # our validators' own words; "secret: secret must …" reads once
        return str(error["msg"]).removeprefix("Value error, ").removeprefix(f"{field} ")
    if kind == "string_pattern_mismatch":
        return PATTERN_MEANINGS.get(ctx.get("pattern", ""), "has characters that are not allowed")
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must be at least {_plural(n, 'character')}"
    if kind == "string_too_long":
        return f"must be at most {_plural(ctx.get('max_length'), 'character')}"
    if kind == "too_short":
        return f"must have at least {_plural(ctx.get('min_length'), 'item')}"
    if kind == "too_long":
        return f"must have at most {_plural(ctx.get('max_length'), 'item')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}"
    return _TYPE_WORDS.get(kind, str(error["msg"]))


def _got(error: Any, field: str) -> str:
    """``, got <value>`` for a short scalar value of a field that is not secret."""
    value = error.get("input")
    if error["type"] in ("missing", "extra_forbidden", "value_error") or field in SECRET_FIELDS:
        return ""
    if isinstance(value, dict):
        return ", got an object"
    if isinstance(value, list):
        return ", got a list"
    shown = "null" if value is None else repr(value)
    return f", got {shown if len(shown) <= 80 else shown[:79] + '…'}"


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field, what is wrong with it, and (unless secret) the value."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        field = next((p for p in reversed(loc) if not p.isdigit()), "")
        parts.append(
            f"{'.'.join(loc) or 'body'}: {_what_is_wrong(error, field)}{_got(error, field)}"
        )
    return "; ".join(parts)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.code, headers=exc.headers)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = (
        exc.detail if isinstance(exc.detail, str) else API_ERROR_CODES.get(exc.status_code, "error")
    )
    if exc.status_code == 404:
        message = "no such route"
    return error_response(exc.status_code, message, headers=exc.headers)


def overloaded(retry_after: int) -> JSONResponse:
    """503: the API is busy (too many requests in flight, or no database connection free)."""
    return error_response(
        503,
        "the API is busy; retry shortly",
        code="overloaded",
        headers={"Retry-After": str(retry_after)},
    )


async def _pool_exhausted(_request: Request, exc: Exception) -> Response:
    logger.warning("database pool exhausted: answering 503")
    return overloaded(retry_after=2)


async def _unhandled(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    return error_response(500, "internal error")


exception_handlers: dict[Any, Any] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    PoolTimeout: _pool_exhausted,
    Exception: _unhandled,
}
