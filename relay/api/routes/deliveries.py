"""The delivery log: every delivery of every event to every subscription, and its attempts.

Owner scoping: the admin sees every delivery (also those of deleted subscriptions); a service
token sees only deliveries of subscriptions it owns, and gets 404 for any other id, so it can
never learn that another owner's delivery exists.

Filters are validated strictly (``relay.api.query``); ``since``/``until`` bound ``created_at``
(``since`` inclusive, ``until`` exclusive). The query itself is ``relay.db.delivery_log``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import log_schemas
from relay.api.auth import Principal, principal
from relay.api.context import Services, services
from relay.api.errors import ApiError
from relay.api.pagination import parse_limit
from relay.api.query import (
    DELIVERY_ID,
    EVENT_TYPE,
    IDENTIFIER,
    SINCE,
    STATUS_LIST,
    STATUSES,
    UNTIL,
    parse_event_type,
    parse_identifier,
    parse_statuses,
    parse_window,
)
from relay.api.spec import CURSOR, LIMIT, Operation, Query, operation
from relay.db import delivery_log
from relay.db.delivery_log import DeliveryFilters
from relay.db.models import Delivery, Subscription


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
            raise ApiError(404, "cursor: no such page (not a cursor for deliveries)")
        filters = replace(filters, before_id=before)
    if not who.is_admin:
        if filters.subscription_id is None:
            filters = replace(filters, owner=who.owner)
        elif not await owns_subscription(svc, who, filters.subscription_id):
            return _page([], None)
    rows = await delivery_log.list_deliveries(svc.db, filters, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        next_cursor = svc.cursors.encode("deliveries", rows[limit - 1].id)
    return _page([delivery_out(d).model_dump(mode="json") for d in rows[:limit]], next_cursor)


async def load_visible_delivery(svc: Services, who: Principal, raw_id: str) -> Delivery:
    """The delivery, or 404 if it does not exist *or* belongs to another owner."""
    delivery = None
    if DELIVERY_ID.fullmatch(raw_id):
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
    assert delivery.id is not None
    attempts = await delivery_log.attempts_of(svc.db, delivery.id)
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
