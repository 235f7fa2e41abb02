"""Rows of the delivery log made directly in the database: events, deliveries and the
subscriptions they belong to, with Clever-style ids."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from relay.db import Database
from relay.db.models import Delivery, Event, Subscription

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


_SERIAL = itertools.count(1)


def event_id(at: datetime = T0) -> str:
    """A Clever-style ObjectId: 8 hex digits of unix time, then a serial."""
    return f"{int(at.timestamp()):08x}{next(_SERIAL):016x}"


async def add_owned_subscription(db: Database, owner: str) -> str:
    sub = Subscription(owner=owner, url="http://127.0.0.1:9/hook", secret="whsec_x")
    async with db.write() as session:
        session.add(sub)
    return sub.id


async def add_event(
    db: Database,
    *,
    district: str = "d1",
    type: str = "users.updated",
    record_id: str = "u1",
    created: datetime = T0,
) -> str:
    eid = event_id(created)
    body = {"id": eid, "type": type, "created": created.isoformat(), "district": district}
    body["data"] = {"object": {"id": record_id}}
    event = Event(
        id=eid,
        district_id=district,
        type=type,
        record_id=record_id,
        created=created,
        body=json.dumps(body),
    )
    async with db.write() as session:
        session.add(event)
    return eid


async def add_delivery(
    db: Database,
    subscription_id: str,
    event: str | None = None,
    *,
    status: str = "succeeded",
    event_type: str = "users.updated",
    created_at: datetime = T0,
    attempts: int = 1,
    last_status_code: int | None = 200,
    next_attempt_at: datetime | None = None,
) -> int:
    delivery = Delivery(
        subscription_id=subscription_id,
        event_id=event or event_id(created_at),
        event_type=event_type,
        status=status,
        attempts=attempts,
        last_status_code=last_status_code,
        next_attempt_at=next_attempt_at,
        created_at=created_at,
    )
    async with db.write() as session:
        session.add(delivery)
    assert delivery.id is not None
    return delivery.id
