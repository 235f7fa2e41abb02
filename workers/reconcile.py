"""The reconciler: Redis is only a buffer, so whatever it lost is rebuilt from the database.

Due deliveries missing from Redis are (re-)queued; queueing is idempotent (job ids derive
from delivery id and attempt, see ``relay.dispatch``), so attempts still in Redis are left
alone and only lost ones come back. Safe to run in every worker at once.

A pass does not read every due delivery. During a large backlog that was most of a busy
worker's CPU (500,000 rows and their Redis lookups every ten seconds), and nearly all of it
found nothing: those rows were queued when they became due. A delivery can be missing from
Redis for two reasons only, and each pass looks exactly where they leave it:

- it became due and its enqueue never happened (a crash between the commit and the enqueue,
  Redis unreachable at that moment, an API without Redis): its due time is recent, so each
  pass reads the deliveries that became due since the previous pass (``MARGIN`` earlier, for
  transactions that committed late);
- Redis lost data (flush, restart without persistence, failover): the pass notices that the
  watermark it keeps in Redis (``WATERMARK_KEY``) is gone with the rest, and reads every due
  delivery. As a backstop against anything unforeseen, every ``FULL_SCAN_EVERY`` seconds a
  pass reads everything anyway.

A deliver job that fails or times out stays in Redis (deferred, ``workers.delivery_queue``),
so the queue itself never drops an attempt that is still due.

It also wakes deliveries parked while their subscription was disabled (waiting, with no next
attempt time) once the subscription is enabled again, so re-enabling needs nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import tuple_
from sqlmodel import col, select, update

from relay.db import Database, utcnow
from relay.db.models import WAITING, Delivery, Subscription
from relay.dispatch import Dispatcher
from relay.ingest import DueDelivery
from workers.context import WorkerContext, context_of

logger = logging.getLogger("relay.reconcile")

BATCH = 2000
GRACE = timedelta(seconds=2)  # leave just-created rows to the ingest path's own enqueue
MARGIN = timedelta(seconds=5)  # longer than a transaction that makes deliveries due
FULL_SCAN_EVERY = 300.0  # seconds
WATERMARK_KEY = "relay:reconciled"


async def unpark(db: Database, now: datetime | None = None) -> list[DueDelivery]:
    """Make parked deliveries of enabled subscriptions due now; returns them."""
    enabled = select(Subscription.id).where(col(Subscription.enabled).is_(True))
    parked = (
        col(Delivery.status).in_(WAITING),
        col(Delivery.next_attempt_at).is_(None),
        col(Delivery.subscription_id).in_(enabled),
    )
    async with db.read() as session:  # a cheap look first: most runs find nothing to write
        if (await session.exec(select(Delivery.id).where(*parked).limit(1))).first() is None:
            return []
    at = now or utcnow()
    async with db.write() as session:
        result = await session.exec(
            update(Delivery)
            .where(*parked)
            .values(next_attempt_at=at, updated_at=at)
            .returning(col(Delivery.id), col(Delivery.attempts), col(Delivery.manual_retry))
        )
        return [DueDelivery(int(i), int(n) + 1, at, bool(m)) for i, n, m in result.all()]


async def requeue_due(
    db: Database,
    dispatcher: Dispatcher,
    now: datetime | None = None,
    since: datetime | None = None,
) -> int:
    """Queue every delivery due by ``now`` (due after ``since``, if given) that is not in
    Redis; returns how many were missing."""
    cutoff = (now or utcnow()) - GRACE
    requeued = 0
    for status in WAITING:  # one index range each: (status, next_attempt_at) is in order
        after: tuple[datetime, int] | None = None
        while True:
            query = (
                select(
                    Delivery.id, Delivery.attempts, Delivery.next_attempt_at, Delivery.manual_retry
                )
                .where(col(Delivery.status) == status)
                .where(col(Delivery.next_attempt_at) <= cutoff)
                .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
                .limit(BATCH)
            )
            if since is not None:
                query = query.where(col(Delivery.next_attempt_at) > since)
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
                break
            last_id, _, last_at, _ = rows[-1]
            if last_id is None or last_at is None:
                break
            after = (last_at, last_id)
    return requeued


@dataclass(frozen=True)
class Watermark:
    """What the previous pass covered: due times up to ``through``; everything at
    ``full_at``. Stored in Redis, so that losing Redis loses it too."""

    through: datetime
    full_at: datetime

    def encode(self) -> str:
        return f"{self.through.timestamp()},{self.full_at.timestamp()}"

    @classmethod
    def decode(cls, raw: bytes | None) -> Watermark | None:
        try:
            through, full_at = (float(v) for v in (raw or b"").decode().split(","))
        except ValueError:
            return None  # absent, or a pass that started a full scan never finished it
        return cls(datetime.fromtimestamp(through, UTC), datetime.fromtimestamp(full_at, UTC))


async def reconcile_pass(app: WorkerContext, now: datetime | None = None) -> int:
    """One pass (see the module docstring); returns how many deliveries were re-queued."""
    now = now or utcnow()
    redis = app.redis
    mark = Watermark.decode(await redis.get(WATERMARK_KEY))
    full = mark is None or (now - mark.full_at).total_seconds() >= FULL_SCAN_EVERY
    if mark is None:
        # present from here on; a flush during this pass deletes it again, so the next pass
        # is a full one too (the SET XX below cannot bring it back)
        await redis.set(WATERMARK_KEY, b"scanning")
    since = None if full or mark is None else mark.through - MARGIN
    requeued = await requeue_due(app.db, app.dispatcher, now=now, since=since)
    full_at = now if full or mark is None else mark.full_at
    await redis.set(WATERMARK_KEY, Watermark(now - GRACE, full_at).encode(), xx=True)
    return requeued


async def reconcile(ctx: dict[str, Any]) -> int:
    app = context_of(ctx)
    woken = await unpark(app.db)
    if woken:
        logger.info(
            "re-enabled subscriptions: parked deliveries are due", extra={"count": len(woken)}
        )
        await app.dispatcher.enqueue(woken)
    requeued = await reconcile_pass(app)
    if requeued:
        logger.warning("re-queued deliveries missing from Redis", extra={"count": requeued})
    return requeued
