"""The API's error format: ``{"error": {"code": "...", "message": "..."}}``, never a 500 for
bad input."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay._exceptions import API_ERROR_CODES, ApiError, SecretUnreadable
from relay.validation import what_is_wrong

__all__ = [
    "ApiError",
    "describe_validation_error",
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


#: Fields whose value an error message must never repeat.
SECRET_FIELDS = frozenset({"token", "secret"})


def _got(error: Any, field: str) -> str:
    """``, got <value>`` for a short scalar value of a field that is not secret."""
    value = error.get("input")
    if error["type"] in ("missing", "extra_forbidden", "value_error") or field in SECRET_FIELDS:
        return ""
    if isinstance(value, dict):
        return ", got an object"
    if isinstance(value, list):
        return ", got a list"
    shown = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
    return f", got {shown if len(shown) <= 80 else shown[:79] + '…'}"


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad field, what is wrong with it, and (unless secret) the value."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        field = next((p for p in reversed(loc) if not p.isdigit()), "")
        parts.append(
            f"{'.'.join(loc) or 'body'}: {what_is_wrong(error, field)}{_got(error, field)}"
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


async def _secret_unreadable(request: Request, exc: Exception) -> Response:
    """A route that needed a stored secret this process's keys do not decrypt (the routes
    that can say more, say it themselves): the row's problem, not the server's."""
    logger.warning(
        "a stored secret does not decrypt with this process's RELAY_ENCRYPTION_KEY",
        extra={"path": request.url.path, "method": request.method},
    )
    return error_response(
        409,
        "a stored secret this request needs does not decrypt with this API process's "
        "RELAY_ENCRYPTION_KEY (written with a key it does not have): give it a new one "
        "(rotate-secret or PATCH secret; a district's PATCH token), or add that key",
        code="secret_unreadable",
    )


async def _changed_meanwhile(request: Request, exc: Exception) -> Response:
    """The row an ORM write expected was changed or deleted by a concurrent request. The
    routes lock the rows they change, so this is a backstop: a race is a 409, never a 500."""
    logger.info(
        "a concurrent request changed the row first",
        extra={"path": request.url.path, "method": request.method},
    )
    return error_response(
        409, "it was changed or deleted by another request meanwhile; read it again and retry"
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"path": request.url.path, "method": request.method})
    return error_response(500, "internal error")


exception_handlers: dict[Any, Any] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    PoolTimeout: _pool_exhausted,
    SecretUnreadable: _secret_unreadable,
    StaleDataError: _changed_meanwhile,
    Exception: _unhandled,
}
