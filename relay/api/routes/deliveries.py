"""The delivery log: every delivery of every event to every subscription, and its attempts.

Owner scoping: the admin sees every delivery (also those of deleted subscriptions); a service
token sees only deliveries of subscriptions it owns, and gets 404 for any other id, so it can
never learn that another owner's delivery exists.

Filters are validated strictly (422 naming the bad value). ``since``/``until`` bound
``created_at`` (``since`` inclusive, ``until`` exclusive) and take ISO 8601; a timestamp without
an offset is read as UTC, like every timestamp this API returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import log_schemas
from relay.api.auth import Principal, principal
from relay.api.context import Services, services
from relay.api.errors import ApiError
from relay.api.pagination import parse_limit
from relay.api.spec import CURSOR, LIMIT, Operation, Query, operation
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription

STATUSES = tuple(s.value for s in DeliveryStatus)
IDENTIFIER = r"^[A-Za-z0-9_.:-]{1,64}$"
EVENT_TYPE = r"^[a-z][a-z_]{0,40}\.[a-z][a-z_]{0,20}$"
_ONE_STATUS = "(" + "|".join(STATUSES) + ")"
STATUS_LIST = f"^{_ONE_STATUS}(,{_ONE_STATUS})*$"
_IDENTIFIER = re.compile(IDENTIFIER)
_EVENT_TYPE = re.compile(EVENT_TYPE)
_DELIVERY_ID = re.compile(r"[0-9]{1,18}")
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
            422, f"{name}: expected <record_type>.<action> such as users.updated, got {value!r}"
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
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00: before any representable UTC time
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


def parse_window(request: Request) -> tuple[datetime | None, datetime | None]:
    since, until = parse_time(request, "since"), parse_time(request, "until")
    if since is not None and until is not None and since > until:
        raise ApiError(422, f"since: {since.isoformat()} is after until {until.isoformat()}")
    return since, until


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


@dataclass(frozen=True)
class DeliveryFilters:
    subscription_id: str | None = None
    statuses: tuple[str, ...] = ()
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    owner: str | None = None  # only deliveries of this owner's subscriptions; None: all
    before_id: int | None = None  # keyset: ids below the last one served


def delivery_query(f: DeliveryFilters, limit: int) -> SelectOfScalar[Delivery]:
    """Newest first. One subscription and one status walk ``ix_deliveries_subscription_status_id``
    backwards and stop after ``limit`` rows, however many rows the table holds."""
    query = select(Delivery).order_by(col(Delivery.id).desc()).limit(limit)
    if f.subscription_id is not None:
        query = query.where(col(Delivery.subscription_id) == f.subscription_id)
    if len(f.statuses) == 1:
        query = query.where(col(Delivery.status) == f.statuses[0])
    elif f.statuses:
        query = query.where(col(Delivery.status).in_(f.statuses))
    if f.event_type is not None:
        query = query.where(col(Delivery.event_type) == f.event_type)
    if f.since is not None:
        query = query.where(col(Delivery.created_at) >= f.since)
    if f.until is not None:
        query = query.where(col(Delivery.created_at) < f.until)
    if f.owner is not None:
        owned = select(Subscription.id).where(col(Subscription.owner) == f.owner)
        query = query.where(col(Delivery.subscription_id).in_(owned))
    if f.before_id is not None:
        query = query.where(col(Delivery.id) < f.before_id)
    return query


def delivery_out(row: Delivery) -> log_schemas.Delivery:
    return log_schemas.Delivery.model_validate(row, from_attributes=True)


async def owns_subscription(svc: Services, who: Principal, subscription_id: str) -> bool:
    if who.is_admin:
        return True
    async with svc.db.read() as session:
        sub = await session.get(Subscription, subscription_id)
    return sub is not None and sub.owner == who.owner


def _page(data: list[Any], next_cursor: str | None) -> JSONResponse:
    return JSONResponse({"data": data, "next_cursor": next_cursor})


@operation(
    Operation(
        "List deliveries, newest first",
        "deliveries",
        {200: log_schemas.DeliveryList},
        query=(
            Query(
                "subscription_id",
                {"type": "string", "pattern": IDENTIFIER},
                "one subscription's deliveries",
            ),
            Query(
                "status",
                {"type": "string", "pattern": STATUS_LIST},
                f"one of {', '.join(STATUSES)}, or several separated by commas",
            ),
            Query(
                "event_type",
                {"type": "string", "pattern": EVENT_TYPE},
                "<record_type>.<action>, e.g. users.updated",
            ),
            SINCE,
            UNTIL,
            LIMIT,
            CURSOR,
        ),
        description="since/until bound created_at. A service token sees only deliveries of "
        "its own subscriptions (another owner's subscription_id yields an empty list). "
        "Pagination is keyset on id: rows created while paging never shift a page.",
    )
)
async def list_deliveries(request: Request) -> Response:
    who, svc = principal(request), services(request)
    limit = parse_limit(request)
    since, until = parse_window(request)
    filters = DeliveryFilters(
        subscription_id=parse_identifier(request, "subscription_id"),
        statuses=parse_statuses(request),
        event_type=parse_event_type(request, "event_type"),
        since=since,
        until=until,
    )
    if cursor := request.query_params.get("cursor"):
        before = svc.cursors.decode("deliveries", cursor)
        if not isinstance(before, int):
            raise ApiError(400, "cursor: not a cursor for deliveries")
        filters = replace(filters, before_id=before)
    if not who.is_admin:
        if filters.subscription_id is None:
            filters = replace(filters, owner=who.owner)
        elif not await owns_subscription(svc, who, filters.subscription_id):
            return _page([], None)
    async with svc.db.read() as session:
        rows = list((await session.exec(delivery_query(filters, limit + 1))).all())
    next_cursor = None
    if len(rows) > limit:
        next_cursor = svc.cursors.encode("deliveries", rows[limit - 1].id)
    return _page([delivery_out(d).model_dump(mode="json") for d in rows[:limit]], next_cursor)


async def load_visible_delivery(svc: Services, who: Principal, raw_id: str) -> Delivery:
    """The delivery, or 404 if it does not exist *or* belongs to another owner."""
    delivery = None
    if _DELIVERY_ID.fullmatch(raw_id):
        async with svc.db.read() as session:
            delivery = await session.get(Delivery, int(raw_id))
    if delivery is None or not await owns_subscription(svc, who, delivery.subscription_id):
        raise ApiError(404, f"no delivery {raw_id!r}")
    return delivery


@operation(
    Operation(
        "Show a delivery and its attempts",
        "deliveries",
        {200: log_schemas.DeliveryDetail},
        errors=(404,),
        description="Here attempts is the list of attempts, oldest first (in the list it is "
        "their count).",
    )
)
async def get_delivery(request: Request) -> Response:
    svc = services(request)
    delivery = await load_visible_delivery(
        svc, principal(request), request.path_params["delivery_id"]
    )
    query = (
        select(DeliveryAttempt)
        .where(col(DeliveryAttempt.delivery_id) == delivery.id)
        .order_by(col(DeliveryAttempt.id))
    )
    async with svc.db.read() as session:
        attempts = list((await session.exec(query)).all())
    detail = log_schemas.DeliveryDetail(
        **delivery_out(delivery).model_dump(exclude={"attempts"}),
        attempts=[
            log_schemas.DeliveryAttempt.model_validate(a, from_attributes=True) for a in attempts
        ],
    )
    return JSONResponse(detail.model_dump(mode="json"))


routes = [
    Route("/v1/deliveries", list_deliveries, methods=["GET"]),
    Route("/v1/deliveries/{delivery_id}", get_delivery, methods=["GET"]),
]
