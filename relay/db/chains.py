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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.db.models import WAITING, Delivery, Event, Subscription
from relay.db.tables import one_of, table_of

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


async def behind_in_flight(
    conn: AsyncConnection, asked: Collection[int], now: datetime
) -> set[int]:
    """Manual attempts of ordered subscriptions (``asked``, just made due): each waits for
    the delivery of its record that may be in flight now (due, not waiting, not asked), so
    that it is sent after that attempt; returns those that now wait."""
    if not asked:
        return set()
    deliveries, events = table_of(Delivery), table_of(Event)
    subscriptions = table_of(Subscription)
    record = (deliveries.c.subscription_id, events.c.district_id, events.c.record_id)
    joined = deliveries.join(events, events.c.id == deliveries.c.event_id)
    rows = await conn.execute(
        sa.select(deliveries.c.id, *record)
        .select_from(joined.join(subscriptions, subscriptions.c.id == deliveries.c.subscription_id))
        .where(deliveries.c.id.in_(set(asked)))
        .where(subscriptions.c.ordered.is_(True))
    )
    mine = {int(i): (s, d, r) for i, s, d, r in rows.all() if r}
    if not mine:
        return set()
    heads = await conn.execute(
        sa.select(sa.func.min(deliveries.c.id), *record)
        .select_from(joined)
        .where(deliveries.c.subscription_id.in_({s for s, _, _ in mine.values()}))
        .where(events.c.record_id.in_({r for _, _, r in mine.values()}))
        .where(deliveries.c.status.in_(WAITING))
        .where(deliveries.c.waiting_for.is_(None))
        .where(deliveries.c.next_attempt_at <= now)
        .where(deliveries.c.id.not_in(set(asked)))
        .group_by(*record)
    )
    head_of = {(s, d, r): int(i) for i, s, d, r in heads.all()}
    pairs = [(i, head_of[key]) for i, key in mine.items() if key in head_of]
    await wait_for(conn, pairs)
    return {i for i, _ in pairs}


async def link(
    conn: AsyncConnection,
    sequence: Iterable[tuple[tuple[str, str], int, bool]],
    tails: dict[tuple[str, str], int],
) -> set[int]:
    """Chain deliveries in event order: ``sequence`` holds (subscription id, record id),
    delivery id, and whether that delivery is about to be sent (False: it already waits in
    its chain, and only becomes the tail). Each one about to be sent waits for its record's
    tail from ``tails`` (updated as it goes); returns those that now wait."""
    pairs: list[tuple[int, int]] = []
    for key, delivery, sending in sequence:
        if sending and key in tails:
            pairs.append((delivery, tails[key]))
        tails[key] = delivery
    await wait_for(conn, pairs)
    return {delivery for delivery, _ in pairs}


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


async def release_subscription(
    conn: AsyncConnection, subscription_id: str, now: datetime
) -> list[Released]:
    """Make every delivery of the subscription that waits due now (ordering switched off)."""
    deliveries = table_of(Delivery)
    mine = (deliveries.c.subscription_id == subscription_id) & deliveries.c.status.in_(WAITING)
    return await _release(conn, _releasing(mine), now)


async def release(conn: AsyncConnection, ended: Collection[int], now: datetime) -> list[Released]:
    """Make the deliveries waiting for ``ended`` (deliveries that just reached a final
    status, in this transaction) due now; returns them, to be queued after the commit."""
    if not ended:
        return []
    return await _release(conn, _RELEASE_WAITERS, now, ended=set(ended))


def _releasing(which: Any) -> sa.Update:
    """The statement that makes the waiting deliveries ``which`` picks due at ``:now``."""
    deliveries = table_of(Delivery)
    return (
        deliveries.update()
        .where(which)
        .where(deliveries.c.waiting_for.is_not(None))
        .values(
            waiting_for=None,
            next_attempt_at=sa.bindparam("now", type_=deliveries.c.next_attempt_at.type),
            updated_at=sa.bindparam("now", type_=deliveries.c.updated_at.type),
        )
        .returning(deliveries.c.id, deliveries.c.attempts, deliveries.c.manual_retry)
    )


_deliveries = table_of(Delivery)
#: built once, as every statement each record batch runs (``release``): the waiters of the
#: ids bound to ``ended``. Their status is compared as ``status || ''``, which no index can
#: serve, so that SQLite (which keeps no statistics) looks them up by ``waiting_for``, not
#: through every waiting delivery by status: with 50,000 due, that one statement took 13 ms
#: of every record batch
_RELEASE_WAITERS = _releasing(
    one_of(_deliveries.c.waiting_for, "ended") & _deliveries.c.status.concat("").in_(WAITING)
)


async def _release(
    conn: AsyncConnection, statement: sa.Update, now: datetime, **params: Any
) -> list[Released]:
    result = await conn.execute(statement, {"now": now, **params})
    return [(int(i), int(n), bool(m)) for i, n, m in result.all()]
