"""The dispatch buffer between the database and the delivery consumers.

Redis holds nothing the database does not: a queued job is only a pointer to a delivery that
is due (``Job``), so everything here may be lost (a flush, a restart without persistence) and
the reconciler rebuilds it from the database. ``jobs`` says what a job is and which queue it
goes to; ``redis_queue`` is the one module that talks to Redis for the queue (key names,
enqueue, claim, finish and defer, the reconciler's watermark); ``reconcile`` re-queues what
Redis lost; ``embedded`` runs a private ``redis-server`` for ``relay run``.
"""

from __future__ import annotations

from relay.queue.jobs import FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE, Job, next_attempts, queue_for
from relay.queue.redis_queue import RedisQueue, open_redis, redis_client, redis_settings

__all__ = [
    "FIRST_ATTEMPTS_QUEUE",
    "RETRIES_QUEUE",
    "Job",
    "RedisQueue",
    "next_attempts",
    "open_redis",
    "queue_for",
    "redis_client",
    "redis_settings",
]
