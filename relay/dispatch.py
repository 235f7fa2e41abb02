"""Handing due deliveries to arq. Redis is only a dispatch buffer: everything here may be lost
(a flush, a restart without persistence) and the reconciler rebuilds it from the database.

Jobs are written in bulk, one pipelined round trip per batch (``SET NX`` of each job key and
``ZADD NX`` of its id), instead of arq's one-transaction-per-job ``enqueue_job``:
a page of 1,000 events fanned out to five subscriptions is 5,000 jobs. The job id is derived
from the delivery id and the attempt number, so enqueueing the same attempt twice (the
ingest path and the reconciler racing) is a no-op, and an arq job for an attempt that already
ran finds the delivery moved on and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import RedisError

from relay.ingest import DueDelivery

logger = logging.getLogger("relay.dispatch")

FIRST_ATTEMPTS_QUEUE = "relay:deliveries"
RETRIES_QUEUE = "relay:retries"
DELIVER_FUNCTION = "deliver"
JOB_KEY_TTL_MS = 2 * 86_400_000  # past the due time; the reconciler re-creates lost keys
_BATCH = 2000


def job_id(delivery_id: int, attempt: int, manual: bool = False) -> str:
    """A manual retry gets an id of its own: the scheduled job for the same attempt may sit
    in the queue until its (later) due time, and must not hold the manual one back."""
    return f"deliver:{delivery_id}:{attempt}" + (":manual" if manual else "")


def queue_for(attempt: int) -> str:
    """First attempts and retries have queues (and worker slots) of their own, so a backlog
    of retries to a dead endpoint never delays first attempts to healthy ones."""
    return FIRST_ATTEMPTS_QUEUE if attempt <= 1 else RETRIES_QUEUE


class Dispatcher:
    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def enqueue(self, items: Sequence[DueDelivery]) -> int:
        """Queue each attempt unless it is already queued; returns how many were new.

        Never raises for a Redis failure: the rows are in the database and the reconciler
        will queue them once Redis is back.
        """
        added = 0
        try:
            for start in range(0, len(items), _BATCH):
                added += await self._enqueue_batch(items[start : start + _BATCH])
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not queue deliveries; the reconciler will retry",
                extra={"error": f"{type(exc).__name__}: {exc}", "count": len(items)},
            )
        return added

    async def _enqueue_batch(self, items: Sequence[DueDelivery]) -> int:
        # The reconciler offers every due delivery every few seconds, and during a large
        # backlog nearly all are already queued: one ZMSCORE per batch finds those, so only
        # the missing ones are serialised and written. (An id in the queue whose job key was
        # lost is dropped by arq when it comes up, and queued again by the next pass.) ZMSCORE
        # needs Redis >= 6.2, as the embedded one is.
        ids = [job_id(i.delivery_id, i.attempt, i.manual) for i in items]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zmscore(FIRST_ATTEMPTS_QUEUE, ids)
            pipe.zmscore(RETRIES_QUEUE, ids)
            queued, retries = await pipe.execute()
        items = [
            item
            for item, first, retry in zip(items, queued, retries, strict=True)
            if first is None and retry is None
        ]
        if not items:
            return 0
        now_ms = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                due_ms = max(now_ms, int(item.due_at.timestamp() * 1000))
                payload = serialize_job(
                    DELIVER_FUNCTION,
                    (item.delivery_id, item.attempt),
                    {},
                    None,
                    now_ms,
                    serializer=self.redis.job_serializer,
                )
                key = job_key_prefix + job_id(item.delivery_id, item.attempt, item.manual)
                pipe.set(key, payload, px=due_ms - now_ms + JOB_KEY_TTL_MS, nx=True)
                # arq keeps a job in its queue until it finishes, so "in the queue" means
                # queued or running. NX on both: an attempt already there is left alone, and
                # one half-written by a crash between the two commands is completed.
                pipe.zadd(
                    queue_for(item.attempt),
                    {job_id(item.delivery_id, item.attempt, item.manual): due_ms},
                    nx=True,
                )
            replies = await pipe.execute()
        return sum(int(added) for added in replies[1::2])
