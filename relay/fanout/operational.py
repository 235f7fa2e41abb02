"""Operational events (``relay.*``): the relay telling its users that something needs a person.

An operational event is stored like a Clever event (``events`` row, ``owner`` set,
``district_id`` null) together with its deliveries, in the transaction that makes the change
it reports: a crash never loses one, and a change that rolls back never sends one. From there
the normal pipeline signs, sends, retries and logs it (webhook-id = its own id).

Who receives one: the enabled subscriptions of the event's ``owner`` whose ``record_types``
list ``relay`` (an empty filter does not: nobody receives them without asking). Subscription
and delivery events belong to the subscription's owner; district events to ``admin``. They are
never about themselves: a delivery of an operational event that fails raises nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.db.models import ADMIN_OWNER, District, Event, EventSource, Subscription, Sync
from relay.db.tables import insert_pending, table_of
from relay.queue import Job

RECORD_TYPE = "relay"
SUBSCRIPTION_DISABLED = "relay.subscription.disabled"
DELIVERY_FAILED = "relay.delivery.failed"
DISTRICT_GAP_DETECTED = "relay.district.gap_detected"
DISTRICT_UNAUTHORIZED = "relay.district.unauthorized"
DISTRICT_ERROR = "relay.district.error"
DISTRICT_RECOVERED = "relay.district.recovered"
DISTRICT_SYNCED = "relay.district.synced"
DISTRICT_SYNC_FAILED = "relay.district.sync_failed"
TYPES: tuple[str, ...] = (
    SUBSCRIPTION_DISABLED,
    DELIVERY_FAILED,
    DISTRICT_GAP_DETECTED,
    DISTRICT_UNAUTHORIZED,
    DISTRICT_ERROR,
    DISTRICT_RECOVERED,
    DISTRICT_SYNCED,
    DISTRICT_SYNC_FAILED,
)


def is_operational(event_type: str) -> bool:
    """The relay's own events (``relay.test`` included), as opposed to Clever's."""
    return event_type.startswith(RECORD_TYPE + ".")


def new_event_id(now: datetime) -> str:
    """ObjectId-shaped like Clever's ids (time first), so receivers can treat it the same."""
    return f"{int(now.timestamp()):08x}" + os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class Notice:
    """One operational event to raise: its type, whose it is, what it is about (the
    subscription, delivery or district id, stored as the event's ``record_id``) and the
    ``data.object`` of its body."""

    type: str
    owner: str
    subject: str
    object: dict[str, Any]


async def raise_notices(
    conn: AsyncConnection, notices: Sequence[Notice], now: datetime
) -> list[Job]:
    """Store ``notices`` and their deliveries in the caller's transaction; returns the first
    attempts to queue once it has committed (the reconciler queues them if that is lost)."""
    if not notices:
        return []
    rows = [_event_row(notice, now) for notice in notices]
    await conn.execute(sa.insert(table_of(Event)), rows)
    audience = await _audience(conn, {n.owner for n in notices})
    pending = [
        (subscription_id, row["id"], row["type"])
        for row in rows
        for subscription_id in audience.get(row["owner"], ())
    ]
    ids = await insert_pending(conn, pending, now)
    return [Job(i, 1, now) for i in sorted(ids.values())]


def _event_row(notice: Notice, now: datetime) -> dict[str, Any]:
    event_id = new_event_id(now)
    body = {
        "id": event_id,
        "type": notice.type,
        "created": api_time(now),
        "data": {"object": notice.object},
    }
    return {
        "id": event_id,
        "district_id": None,
        "owner": notice.owner,
        "source": EventSource.RELAY,
        "type": notice.type,
        "record_id": notice.subject[:64],
        "created": now,
        "received_at": now,
        "body": json.dumps(body, separators=(",", ":")),
    }


async def _audience(conn: AsyncConnection, owners: set[str]) -> dict[str, list[str]]:
    """Per owner, its enabled subscriptions that asked for operational events."""
    subscriptions = table_of(Subscription)
    rows = await conn.execute(
        sa.select(subscriptions.c.id, subscriptions.c.owner, subscriptions.c.record_types)
        .where(subscriptions.c.owner.in_(owners))
        .where(subscriptions.c.enabled.is_(True))
        .order_by(subscriptions.c.id)
    )
    audience: dict[str, list[str]] = {}
    for subscription_id, owner, record_types in rows.all():
        if RECORD_TYPE in (record_types or ()):
            audience.setdefault(owner, []).append(subscription_id)
    return audience


def api_time(value: datetime | None) -> str | None:
    """A timestamp as the API writes it (ISO 8601, ``Z``)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def subscription_disabled(subscription: Subscription, reason: str, at: datetime) -> Notice:
    """The subscription as the API shows it (no secret), disabled at ``at`` for ``reason``
    (``subscription`` as read before: the change is the caller's UPDATE)."""
    s = subscription
    shown = {
        "id": s.id,
        "owner": s.owner,
        "url": s.url,
        "description": s.description,
        "record_types": list(s.record_types),
        "actions": list(s.actions),
        "schools": list(s.schools),
        "districts": list(s.districts),
        "roles": list(s.roles),
        "changed": list(s.changed),
        "enabled": False,
        "ordered": s.ordered,
        "max_in_flight": s.max_in_flight,
        "max_per_second": s.max_per_second,
        "disabled_reason": reason,
        "created_at": api_time(s.created_at),
        "updated_at": api_time(at),
    }
    return Notice(SUBSCRIPTION_DISABLED, s.owner, s.id, shown)


def district_notice(
    event_type: str, district: District, now: datetime, sync: Sync | None
) -> Notice:
    """A district event, for the admin: the district as the API shows it (no token), with
    ``sync``, its last or running sync (``district.sync_id``'s row)."""
    d = district
    shown: dict[str, Any] = {
        "id": d.id,
        "name": d.name,
        "status": d.status,
        "start_from": d.start_from,
        "token_source": d.token_source,
        "cursor": d.cursor,
        "last_polled_at": api_time(d.last_polled_at),
        "last_event_at": api_time(d.last_event_at),
        "lag_seconds": d.lag_seconds(now),
        "last_error": d.last_error,
        "created_at": api_time(d.created_at),
        "updated_at": api_time(d.updated_at),
    }
    shown["sync"] = None
    if sync is not None:
        shown["sync"] = {
            k: api_time(v) if isinstance(v, datetime) else v for k, v in sync.shown().items()
        }
    return Notice(event_type, ADMIN_OWNER, d.id, shown)


def delivery_failed(owner: str, delivery: dict[str, Any], last_attempt: dict[str, Any]) -> Notice:
    """A delivery that ended ``failed``: the delivery as the log lists it, with its last
    attempt (``delivery`` holds the ``deliveries`` row's columns)."""
    shown = {
        key: delivery[key]
        for key in (
            "id",
            "subscription_id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "waiting_for",
            "last_status_code",
        )
    }
    shown |= {
        "created_at": api_time(delivery["created_at"]),
        "next_attempt_at": api_time(delivery["next_attempt_at"]),
        "last_attempt": last_attempt | {"attempted_at": api_time(last_attempt["attempted_at"])},
    }
    return Notice(DELIVERY_FAILED, owner, str(delivery["id"]), shown)
