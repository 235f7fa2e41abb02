"""Ordered subscriptions: the deliveries of one record form a chain, one at a time.

A delivery of an ordered subscription that is stored while an earlier delivery of the same
record (``events.record_id`` within a district) to the same subscription is still waiting
gets ``waiting_for`` = that delivery, and no next attempt time. The transaction that ends a
delivery (succeeded, failed, cancelled) releases the one waiting for it (:func:`release`),
so the waiting lives in the database: a killed worker, a Redis flush or several workers can
neither release a delivery early nor strand it. ``docs/architecture.md`` has the rule.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.db.models import WAITING, Delivery, Event
from relay.db.tables import table_of

#: (delivery id, attempts, manual_retry) of a released delivery: its next job
Released = tuple[int, int, bool]


async def chain_tails(
    conn: AsyncConnection,
    district_id: str,
    subscription_ids: Collection[str],
    record_ids: Collection[str],
) -> dict[tuple[str, str], int]:
    """Per (subscription id, record id), the newest delivery still waiting for an attempt,
    locked for this transaction (FOR UPDATE; SQLite's write transaction holds the database),
    so that it cannot end, and release nobody, before the delivery chained to it commits."""
    if not subscription_ids or not record_ids:
        return {}
    deliveries, events = table_of(Delivery), table_of(Event)
    newest = (
        sa.select(deliveries.c.subscription_id, events.c.record_id, sa.func.max(deliveries.c.id))
        .select_from(deliveries.join(events, events.c.id == deliveries.c.event_id))
        .where(events.c.district_id == district_id)
        .where(events.c.record_id.in_(set(record_ids)))
        .where(deliveries.c.subscription_id.in_(set(subscription_ids)))
        .where(deliveries.c.status.in_(WAITING))
        .group_by(deliveries.c.subscription_id, events.c.record_id)
    )
    found = {(s, r): int(i) for s, r, i in (await conn.execute(newest)).all()}
    if not found:
        return {}
    locked = await conn.execute(
        sa.select(deliveries.c.id)
        .where(deliveries.c.id.in_(found.values()))
        .where(deliveries.c.status.in_(WAITING))  # re-read once the lock is ours
        .order_by(deliveries.c.id)
        .with_for_update()
    )
    still_waiting = {int(i) for (i,) in locked.all()}
    return {key: i for key, i in found.items() if i in still_waiting}


async def wait_for(conn: AsyncConnection, pairs: Iterable[tuple[int, int]]) -> None:
    """Chain each (delivery, predecessor): pending, with no next attempt until released."""
    rows = [{"b_id": delivery, "b_after": after} for delivery, after in pairs]
    if not rows:
        return
    deliveries = table_of(Delivery)
    await conn.execute(
        deliveries.update()
        .where(deliveries.c.id == sa.bindparam("b_id"))
        .values(waiting_for=sa.bindparam("b_after"), next_attempt_at=None),
        rows,
    )


async def release(conn: AsyncConnection, ended: Collection[int], now: datetime) -> list[Released]:
    """Make the deliveries waiting for ``ended`` (deliveries that just reached a final
    status, in this transaction) due now; returns them, to be queued after the commit."""
    if not ended:
        return []
    deliveries = table_of(Delivery)
    result = await conn.execute(
        deliveries.update()
        .where(deliveries.c.waiting_for.in_(set(ended)))
        .where(deliveries.c.status.in_(WAITING))
        .values(waiting_for=None, next_attempt_at=now, updated_at=now)
        .returning(deliveries.c.id, deliveries.c.attempts, deliveries.c.manual_retry)
    )
    return [(int(i), int(n), bool(m)) for i, n, m in result.all()]
