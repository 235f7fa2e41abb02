"""The reconciler: Redis is only a buffer, so whatever it lost is rebuilt from the database.

Due deliveries missing from Redis are (re-)queued; queueing is idempotent (job ids derive
from delivery id and attempt, see ``relay.queue.jobs``), so attempts still in Redis are left
alone and only lost ones come back. Safe to run in every worker at once.

A pass does not read every due delivery. During a large backlog that was most of a busy
worker's CPU (500,000 rows and their Redis lookups every ten seconds), and nearly all of it
found nothing: those rows were queued when they became due. A delivery can be missing from
Redis for two reasons only, and each pass looks exactly where they leave it:

- it became due and its enqueue never happened (a crash between the commit and the enqueue,
  Redis unreachable at that moment, an API without Redis): its due time is recent, so each
  pass reads the deliveries that became due since the previous pass (``margin`` earlier, for
  transactions that committed late: ``relay.tuning.ReconcileTuning``);
- Redis lost data (flush, restart without persistence, failover): the pass notices that the
  watermark it keeps in Redis is gone with the rest, and reads every due delivery. As a
  backstop against anything unforeseen, every ``full_scan_every`` seconds a pass reads
  everything anyway.

A deliver job that fails or times out stays in Redis (deferred, ``relay.delivery.consumer``),
so the queue itself never drops an attempt that is still due.

It also wakes deliveries parked while their subscription was disabled (waiting, with no next
attempt time) once the subscription is enabled again, so re-enabling needs nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import tuple_
from sqlmodel import col, select, update

from relay.db import Database, utcnow
from relay.db.models import WAITING, Delivery, Subscription
from relay.queue.jobs import Job, next_attempts
from relay.queue.redis_queue import RedisQueue
from relay.tuning import ReconcileTuning

logger = logging.getLogger("relay.reconcile")


@dataclass(frozen=True)
class Watermark:
    """What the previous pass covered: due times up to ``through``; everything at
    ``full_at``. Stored in Redis, so that losing Redis loses it too."""

    through: datetime
    full_at: datetime

    def encode(self) -> bytes:
        return f"{self.through.timestamp()},{self.full_at.timestamp()}".encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Watermark | None:
        try:
            through, full_at = (float(v) for v in (raw or b"").decode().split(","))
        except ValueError:
            return None  # absent, or a pass that started a full scan never finished it
        return cls(datetime.fromtimestamp(through, UTC), datetime.fromtimestamp(full_at, UTC))


class Reconciler:
    def __init__(
        self, db: Database, queue: RedisQueue, tuning: ReconcileTuning | None = None
    ) -> None:
        self.db = db
        self.queue = queue
        self.tuning = tuning or ReconcileTuning()

    async def run(self) -> int:
        """Wake parked deliveries, then one pass; returns how many were re-queued."""
        woken = await self.unpark()
        if woken:
            logger.info(
                "re-enabled subscriptions: parked deliveries are due", extra={"count": len(woken)}
            )
            await self.queue.enqueue(woken)
        requeued = await self.run_pass()
        if requeued:
            logger.warning("re-queued deliveries missing from Redis", extra={"count": requeued})
        return requeued

    async def run_pass(self, now: datetime | None = None) -> int:
        """One pass (see the module docstring); returns how many deliveries were re-queued."""
        now = now or utcnow()
        mark = Watermark.decode(await self.queue.read_watermark())
        full = mark is None or (now - mark.full_at).total_seconds() >= self.tuning.full_scan_every
        if mark is None:
            # present from here on; a flush during this pass deletes it again, so the next
            # pass is a full one too (the write below cannot bring it back)
            await self.queue.write_watermark(b"scanning")
        since = None if full or mark is None else mark.through - self.tuning.margin
        requeued = await self.requeue_due(now=now, since=since)
        full_at = now if full or mark is None else mark.full_at
        done = Watermark(now - self.tuning.grace, full_at)
        await self.queue.write_watermark(done.encode(), only_if_present=True)
        return requeued

    async def unpark(self, now: datetime | None = None) -> list[Job]:
        """Make parked deliveries of enabled subscriptions due now; returns them."""
        enabled = select(Subscription.id).where(col(Subscription.enabled).is_(True))
        parked = (
            col(Delivery.status).in_(WAITING),
            col(Delivery.next_attempt_at).is_(None),
            col(Delivery.waiting_for).is_(None),  # waits for its record's previous event
            col(Delivery.subscription_id).in_(enabled),
        )
        async with self.db.read() as session:  # a cheap look first: most runs find nothing
            if (await session.exec(select(Delivery.id).where(*parked).limit(1))).first() is None:
                return []
        at = now or utcnow()
        async with self.db.write() as session:
            result = await session.exec(
                update(Delivery)
                .where(*parked)
                .values(next_attempt_at=at, updated_at=at)
                .returning(col(Delivery.id), col(Delivery.attempts), col(Delivery.manual_retry))
            )
            return next_attempts(result.all(), at)

    async def requeue_due(self, now: datetime | None = None, since: datetime | None = None) -> int:
        """Queue every delivery due by ``now`` (due after ``since``, if given) that is not in
        Redis; returns how many were missing."""
        cutoff = (now or utcnow()) - self.tuning.grace
        requeued = 0
        for status in WAITING:  # one index range each: (status, next_attempt_at) is in order
            after: tuple[datetime, int] | None = None
            while True:
                rows = await self._due(status, cutoff, since, after)
                due = [Job(int(i), n + 1, at, manual) for i, n, at, manual in rows if i and at]
                requeued += await self.queue.enqueue(due)
                if len(rows) < self.tuning.batch:
                    break
                last_id, _, last_at, _ = rows[-1]
                if last_id is None or last_at is None:
                    break
                after = (last_at, last_id)
        return requeued

    async def _due(
        self,
        status: str,
        cutoff: datetime,
        since: datetime | None,
        after: tuple[datetime, int] | None,
    ) -> list[tuple[int | None, int, datetime | None, bool]]:
        query = (
            select(Delivery.id, Delivery.attempts, Delivery.next_attempt_at, Delivery.manual_retry)
            .where(col(Delivery.status) == status)
            .where(col(Delivery.next_attempt_at) <= cutoff)
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(self.tuning.batch)
        )
        if since is not None:
            query = query.where(col(Delivery.next_attempt_at) > since)
        if after is not None:
            query = query.where(
                tuple_(col(Delivery.next_attempt_at), col(Delivery.id)) > tuple_(*after)
            )
        async with self.db.read() as session:
            return list((await session.exec(query)).all())
