"""The reconciler: Redis is only a buffer, so whatever it lost is rebuilt from the database.

Every delivery that is due in the database is (re-)queued; queueing is idempotent (job ids
derive from delivery id and attempt, see ``relay.dispatch``), so attempts still in Redis are
left alone and only lost ones come back. Safe to run in every worker at once.

It also wakes deliveries parked while their subscription was disabled (waiting, with no next
attempt time) once the subscription is enabled again, so re-enabling needs nothing else.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import tuple_
from sqlmodel import col, select, update

from relay.db import Database, utcnow
from relay.db.models import WAITING, Delivery, Subscription
from relay.dispatch import Dispatcher
from relay.ingest import DueDelivery
from workers.context import context_of

logger = logging.getLogger("relay.reconcile")

BATCH = 2000
GRACE = timedelta(seconds=2)  # leave just-created rows to the ingest path's own enqueue


async def unpark(db: Database, now: datetime | None = None) -> int:
    """Make parked deliveries of enabled subscriptions due now; returns how many."""
    enabled = select(Subscription.id).where(col(Subscription.enabled).is_(True))
    parked = (
        col(Delivery.status).in_(WAITING),
        col(Delivery.next_attempt_at).is_(None),
        col(Delivery.subscription_id).in_(enabled),
    )
    async with db.read() as session:  # a cheap look first: most runs find nothing to write
        if (await session.exec(select(Delivery.id).where(*parked).limit(1))).first() is None:
            return 0
    at = now or utcnow()
    async with db.write() as session:
        result = await session.exec(
            update(Delivery).where(*parked).values(next_attempt_at=at, updated_at=at)
        )
    return int(result.rowcount)


async def requeue_due(db: Database, dispatcher: Dispatcher, now: datetime | None = None) -> int:
    """Queue every due delivery that is not in Redis; returns how many were missing."""
    cutoff = (now or utcnow()) - GRACE
    after: tuple[datetime, int] | None = None
    requeued = 0
    while True:
        query = (
            select(Delivery.id, Delivery.attempts, Delivery.next_attempt_at, Delivery.manual_retry)
            .where(col(Delivery.status).in_(WAITING))
            .where(col(Delivery.next_attempt_at) <= cutoff)
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(BATCH)
        )
        if after is not None:
            query = query.where(
                tuple_(col(Delivery.next_attempt_at), col(Delivery.id)) > tuple_(*after)
            )
        async with db.read() as session:
            rows = list((await session.exec(query)).all())
        due = [
            DueDelivery(int(i), attempts + 1, at, manual)
            for i, attempts, at, manual in rows
            if i and at
        ]
        requeued += await dispatcher.enqueue(due)
        if len(rows) < BATCH:
            return requeued
        last_id, _, last_at, _ = rows[-1]
        after = (last_at, last_id) if last_id is not None and last_at is not None else None


async def reconcile(ctx: dict[str, Any]) -> int:
    app = context_of(ctx)
    woken = await unpark(app.db)
    if woken:
        logger.info("re-enabled subscriptions: parked deliveries are due", extra={"count": woken})
    requeued = await requeue_due(app.db, app.dispatcher)
    if requeued:
        logger.warning("re-queued deliveries missing from Redis", extra={"count": requeued})
    return requeued
