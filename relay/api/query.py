"""Query-string parameters of the list routes, validated strictly: 422 naming the bad value.

``since``/``until`` take ISO 8601; a timestamp without an offset is read as UTC, like every
timestamp this API returns.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.requests import Request

from relay._exceptions import ApiError
from relay.api.spec import Query
from relay.db.models import DeliveryStatus

STATUSES = tuple(s.value for s in DeliveryStatus)
IDENTIFIER = r"^[A-Za-z0-9_.:-]{1,64}$"
EVENT_TYPE = r"^[a-z][a-z_]{0,40}\.[a-z][a-z_]{0,20}(\.[a-z][a-z_]{0,20})?$"
_ONE_STATUS = "(" + "|".join(STATUSES) + ")"
STATUS_LIST = f"^{_ONE_STATUS}(,{_ONE_STATUS})*$"
_IDENTIFIER = re.compile(IDENTIFIER)
_EVENT_TYPE = re.compile(EVENT_TYPE)
DELIVERY_ID = re.compile(r"[0-9]{1,18}")
# An unencoded "+" in a query string arrives as a space: "…T12:00:00 02:00" meant "+02:00".
_LOST_PLUS = re.compile(r"(\d{4}-?\d{2}-?\d{2}T[0-9:.,]+) (\d{2}(?::?\d{2})?)")

SINCE = Query(
    "since",
    {"type": "string", "format": "date-time"},
    "ISO 8601, inclusive; without an offset the time is read as UTC",
)
UNTIL = Query(
    "until",
    {"type": "string", "format": "date-time"},
    "ISO 8601, exclusive; without an offset the time is read as UTC",
)


def parse_identifier(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and not _IDENTIFIER.fullmatch(value):
        raise ApiError(422, f"{name}: not a valid id: {value!r}")
    return value


def parse_event_type(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and not _EVENT_TYPE.fullmatch(value):
        raise ApiError(
            422,
            f"{name}: expected <record_type>.<action> such as users.updated (or a relay.* "
            f"type such as relay.delivery.failed), got {value!r}",
        )
    return value


def parse_time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(_LOST_PLUS.sub(r"\1+\2", raw))
    except ValueError:
        raise ApiError(
            422,
            f"{name}: not an ISO 8601 timestamp: {raw!r} (e.g. 2024-05-01T12:00:00Z; "
            "without an offset the time is read as UTC)",
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return to_utc(value)


def to_utc(value: datetime) -> datetime:
    """``value`` in UTC; a time within a day of the calendar's ends whose offset takes it
    past them (0001-01-01T00:00+14:00) is the first or last representable instant."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


def parse_window(request: Request) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until``; one after the other is an empty window (an empty list), as
    any other filter that matches nothing."""
    return parse_time(request, "since"), parse_time(request, "until")


def parse_statuses(request: Request) -> tuple[str, ...]:
    raw = request.query_params.get("status")
    if raw is None:
        return ()
    values = tuple(dict.fromkeys(raw.split(",")))
    for value in values:
        if value not in STATUSES:
            raise ApiError(
                422, f"status: unknown status {value!r}; expected one of {', '.join(STATUSES)}"
            )
    return values
