"""The reconciler: Redis is only a buffer, so whatever it lost is rebuilt from the database.

Every delivery that is due in the database is (re-)queued; queueing is idempotent (job ids
derive from delivery id and attempt, see ``relay.dispatch``), so attempts still in Redis are
left alone and only lost ones come back. Safe to run in every worker at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import tuple_
from sqlmodel import col, select

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryStatus
from relay.dispatch import Dispatcher
from relay.ingest import DueDelivery
from workers.context import context_of

logger = logging.getLogger("relay.reconcile")

BATCH = 2000
GRACE = timedelta(seconds=2)  # leave just-created rows to the ingest path's own enqueue


async def requeue_due(db: Database, dispatcher: Dispatcher, now: datetime | None = None) -> int:
    """Queue every due delivery that is not in Redis; returns how many were missing."""
    cutoff = (now or utcnow()) - GRACE
    after: tuple[datetime, int] | None = None
    requeued = 0
    while True:
        query = (
            select(Delivery.id, Delivery.attempts, Delivery.next_attempt_at)
            .where(col(Delivery.status).in_([DeliveryStatus.PENDING, DeliveryStatus.RETRYING]))
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
        due = [DueDelivery(int(i), attempts + 1, at) for i, attempts, at in rows if i and at]
        requeued += await dispatcher.enqueue(due)
        if len(rows) < BATCH:
            return requeued
        last_id, _, last_at = rows[-1]
        after = (last_at, last_id) if last_id is not None and last_at is not None else None


async def reconcile(ctx: dict[str, Any]) -> int:
    app = context_of(ctx)
    requeued = await requeue_due(app.db, app.dispatcher)
    if requeued:
        logger.warning("re-queued deliveries missing from Redis", extra={"count": requeued})
    return requeued
