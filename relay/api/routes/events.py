"""The event log: Clever events as stored (``id`` is the Clever event id) and their deliveries.

Owner scoping: the admin sees every stored event. A service token sees only events delivered
to (that is, with a delivery row for) one of its subscriptions, and the operational events
(``relay.*``) raised for its owner, and inside an event only its own deliveries; any other id
is 404. ``since``/``until`` bound ``created`` (Clever's time of
the event), read exactly like the delivery log's.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import exists, or_
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
from relay.api.query import (
    EVENT_TYPE,
    IDENTIFIER,
    SINCE,
    UNTIL,
    parse_event_type,
    parse_identifier,
    parse_window,
)
from relay.api.routes.deliveries import delivery_out
from relay.api.spec import CURSOR, LIMIT, Operation, Query, operation
from relay.db.models import Delivery, Event, EventSource, Subscription

SOURCES = tuple(s.value for s in EventSource)


def _owned_subscriptions(owner: str) -> Any:
    return select(Subscription.id).where(col(Subscription.owner) == owner)


def _visible(query: SelectOfScalar[Event], who: Principal) -> SelectOfScalar[Event]:
    """Only events with a delivery to one of a service token's subscriptions, and its own
    operational events."""
    if who.is_admin:
        return query
    delivered = exists().where(
        col(Delivery.event_id) == col(Event.id),
        col(Delivery.subscription_id).in_(_owned_subscriptions(who.owner)),
    )
    return query.where(or_(delivered, col(Event.owner) == who.owner))


def event_out(event: Event) -> log_schemas.Event:
    return log_schemas.Event(
        id=event.id,
        district=event.district_id,
        owner=event.owner,
        type=event.type,
        record_id=event.record_id,
        source=event.source,
        created=event.created,
        received_at=event.received_at,
    )


@operation(
    Operation(
        "List stored events, newest first",
        "events",
        {200: log_schemas.EventList},
        query=(
            Query("district", {"type": "string", "pattern": IDENTIFIER}, "one Clever district id"),
            Query(
                "type",
                {"type": "string", "pattern": EVENT_TYPE},
                "<record_type>.<action>, e.g. users.updated, or a relay.* type such as "
                "relay.subscription.disabled",
            ),
            Query(
                "record_id", {"type": "string", "pattern": IDENTIFIER}, "the changed record's id"
            ),
            Query(
                "source",
                {"type": "string", "enum": list(SOURCES)},
                "clever (as received), sync (a difference a sync found), snapshot (a "
                "bootstrap) or relay (operational)",
            ),
            SINCE,
            UNTIL,
            LIMIT,
            CURSOR,
        ),
        description="since/until bound the event's Clever creation time. A service token "
        "sees only events delivered to one of its subscriptions and its own relay.* events. "
        "Pagination is keyset on the event id.",
    )
)
async def list_events(request: Request) -> Response:
    who, svc = principal(request), services(request)
    limit = parse_limit(request)
    district = parse_identifier(request, "district")
    event_type = parse_event_type(request, "type")
    record_id = parse_identifier(request, "record_id")
    source = request.query_params.get("source")
    if source is not None and source not in SOURCES:
        raise ApiError(422, f"source: must be one of {', '.join(SOURCES)}, not {source[:40]!r}")
    since, until = parse_window(request)
    query = select(Event).order_by(col(Event.id).desc()).limit(limit + 1)
    if district is not None:
        query = query.where(col(Event.district_id) == district)
    if event_type is not None:
        query = query.where(col(Event.type) == event_type)
    if record_id is not None:
        query = query.where(col(Event.record_id) == record_id)
    if source is not None:
        query = query.where(col(Event.source) == source)
    if since is not None:
        query = query.where(col(Event.created) >= since)
    if until is not None:
        query = query.where(col(Event.created) < until)
    if cursor := request.query_params.get("cursor"):
        before = svc.cursors.decode("events", cursor)
        if not isinstance(before, str):
            raise ApiError(404, "cursor: no such page (not a cursor for events)")
        query = query.where(col(Event.id) < before)
    async with svc.db.read() as session:
        rows = list((await session.exec(_visible(query, who))).all())
    next_cursor = svc.cursors.encode("events", rows[limit - 1].id) if len(rows) > limit else None
    data = [event_out(e).model_dump(mode="json") for e in rows[:limit]]
    return JSONResponse({"data": data, "next_cursor": next_cursor})


@operation(
    Operation(
        "Show an event (its webhook body) and its deliveries",
        "events",
        {200: log_schemas.EventDetail},
        errors=(404,),
        description="A service token sees the event only if it was delivered to one of its "
        "subscriptions, and then only its own deliveries.",
    )
)
async def get_event(request: Request) -> Response:
    who, svc = principal(request), services(request)
    event, deliveries = await visible_event(svc, who, request.path_params["event_id"])
    detail = log_schemas.EventDetail(
        **event_out(event).model_dump(),
        body=json.loads(event.body),
        deliveries=[delivery_out(d) for d in deliveries],
    )
    return JSONResponse(detail.model_dump(mode="json"))


async def visible_event(
    svc: Services, who: Principal, event_id: str
) -> tuple[Event, list[Delivery]]:
    """The event and its deliveries the caller may see (also /ui's event page), or 404."""
    deliveries_query = (
        select(Delivery).where(col(Delivery.event_id) == event_id).order_by(col(Delivery.id))
    )
    if not who.is_admin:
        deliveries_query = deliveries_query.where(
            col(Delivery.subscription_id).in_(_owned_subscriptions(who.owner))
        )
    async with svc.db.read() as session:
        event = await session.get(Event, event_id) if len(event_id) <= 64 else None
        deliveries = list((await session.exec(deliveries_query)).all()) if event else []
    mine = event is not None and (who.is_admin or bool(deliveries) or event.owner == who.owner)
    if event is None or not mine:
        raise ApiError(404, f"no event {event_id!r}")
    return event, deliveries


routes = [
    Route("/v1/events", list_events, methods=["GET"]),
    Route("/v1/events/{event_id}", get_event, methods=["GET"]),
]
