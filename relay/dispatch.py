"""Handing due deliveries to the workers through Redis. Redis is only a dispatch buffer:
everything here may be lost (a flush, a restart without persistence) and the reconciler
rebuilds it from the database.

Each delivery queue is one sorted set of job ids scored by due time (ms), the layout of an arq
queue. A job id says everything a job needs (``deliver:{delivery}:{attempt}[:manual]``), so
there is no job payload to write or read: a batch of attempts is one ``ZADD NX`` per queue,
where arq's ``enqueue_job`` is a transaction per job plus a pickled payload (a page of 1,000
events fanned out to five subscriptions is 5,000 jobs). The id derives from the delivery and
the attempt, so queueing the same attempt twice (the ingest path and the reconciler racing) is
a no-op, and a job for an attempt that already ran finds the delivery moved on and does
nothing. ``workers.delivery_queue`` consumes the queues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from relay.ingest import DueDelivery

logger = logging.getLogger("relay.dispatch")

FIRST_ATTEMPTS_QUEUE = "relay:deliveries"
RETRIES_QUEUE = "relay:retries"
DELIVER_FUNCTION = "deliver"  # the first part of a job id
_BATCH = 2000


def job_id(delivery_id: int, attempt: int, manual: bool = False) -> str:
    """A manual retry gets an id of its own: the scheduled job for the same attempt may sit
    in the queue until its (later) due time, and must not hold the manual one back."""
    return f"{DELIVER_FUNCTION}:{delivery_id}:{attempt}" + (":manual" if manual else "")


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
        now_ms = int(time.time() * 1000)
        by_queue: dict[str, dict[str, int]] = {}
        for item in items:
            due_ms = max(now_ms, int(item.due_at.timestamp() * 1000))
            queued = by_queue.setdefault(queue_for(item.attempt), {})
            queued[job_id(item.delivery_id, item.attempt, item.manual)] = due_ms
        added = 0
        for queue, jobs in by_queue.items():
            # NX: an attempt already queued (or running: a job leaves the queue when it ends)
            # keeps its place and its due time
            added += int(await self.redis.zadd(queue, jobs, nx=True))
        return added
