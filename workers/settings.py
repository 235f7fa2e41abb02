"""``WorkerSettings`` and the worker process: three arq queues and the poll supervisor.

- ``relay:deliveries`` carries first attempts, ``relay:retries`` later ones, each with its own
  job slots, so retries piling up for a dead endpoint never delay first attempts elsewhere.
  Their jobs are arq jobs, run by ``workers.delivery_queue`` (claimed and finished in bulk)
  rather than by arq's one-job-at-a-time ``Worker``.
- ``relay:cron`` runs the periodic jobs (reconciler, district discovery, retention) under
  arq's ``Worker``. A delivery's claim lapses ``RELAY_DELIVERY_TIMEOUT`` + 15 s after it was
  taken, so that is how long a SIGKILLed worker's in-flight deliveries wait to run elsewhere.
- The poll supervisor is not an arq job: polling is driven by database leases, so it keeps
  working while Redis is down (deliveries wait in the outbox meanwhile).
- arq exits when Redis goes away; here each queue's loop is restarted instead, and the
  Redis client retries commands with backoff, so a Redis restart needs no worker restart.
- The reconciler (``workers.reconcile``) runs every ``RELAY_RECONCILE_INTERVAL`` seconds
  (default 10): how long a delivery lost from Redis (flush, restart without persistence)
  waits before it is queued again. Values that do not divide 60 still work, with one shorter
  gap each minute (arq cron has a one-minute cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.cron import CronJob
from arq.worker import Worker
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.dispatch import FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE
from relay.settings import Settings
from workers.context import WorkerContext
from workers.delivery_queue import DeliveryQueue
from workers.discovery import discover_districts
from workers.poll import PollSupervisor
from workers.reconcile import reconcile
from workers.retention import purge_expired

logger = logging.getLogger("relay.worker")

RESTART_DELAY = 1.0
CRON_QUEUE = "relay:cron"
CRON_TIMEOUT = 120
DISCOVER_EVERY_MINUTES = 5
PURGE_AT_MINUTE = 17  # hourly
# Jobs in progress per worker. Most of a job's life is spent waiting for a shared query or
# transaction (workers.batching), so more jobs make bigger batches rather than more load:
# 100 → 600 measured +50 % deliveries/s (bench/throughput.py). Sending is bounded apart, per
# subscription (workers.context.PER_SUBSCRIPTION_CONCURRENCY).
FIRST_ATTEMPTS_MAX_JOBS = 600
RETRIES_MAX_JOBS = 50


@dataclass(frozen=True)
class WorkerSettings:
    """The arq worker of the cron queue: the reconciler, retention and district discovery."""

    reconcile_every: int = 10
    max_jobs: int = 4
    job_timeout: float = CRON_TIMEOUT
    keep_result: int = 0
    health_check_interval: int = 30
    poll_delay: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerSettings:
        return cls(reconcile_every=settings.reconcile_interval)

    def cron_jobs(self) -> list[CronJob]:
        return [
            cron(
                reconcile,
                second=set(range(0, 60, self.reconcile_every)),
                run_at_startup=True,
                timeout=self.job_timeout,
            ),
            cron(purge_expired, minute=PURGE_AT_MINUTE, second=30, timeout=self.job_timeout),
            cron(
                discover_districts,
                minute=set(range(0, 60, DISCOVER_EVERY_MINUTES)),
                second=0,
                run_at_startup=True,
                timeout=self.job_timeout,
            ),
        ]

    def worker(self, pool: ArqRedis, ctx: dict[str, Any]) -> Worker:
        return Worker(
            functions=[],
            cron_jobs=self.cron_jobs(),
            queue_name=CRON_QUEUE,
            redis_pool=pool,
            ctx=ctx,
            handle_signals=False,
            max_jobs=self.max_jobs,
            job_timeout=self.job_timeout,
            keep_result=self.keep_result,
            poll_delay=self.poll_delay,
            health_check_interval=self.health_check_interval,
        )


def delivery_queues(app: WorkerContext) -> list[DeliveryQueue]:
    # Just above the delivery timeout: a deliver job that outlives it is abandoned, and a
    # killed worker's claims lapse soon after (``delivery_queue.CLAIM_MARGIN``).
    timeout = app.settings.delivery_timeout + 5
    return [
        DeliveryQueue(
            app, FIRST_ATTEMPTS_QUEUE, max_jobs=FIRST_ATTEMPTS_MAX_JOBS, job_timeout=timeout
        ),
        DeliveryQueue(app, RETRIES_QUEUE, max_jobs=RETRIES_MAX_JOBS, job_timeout=timeout),
    ]


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 60
    settings.conn_timeout = 2
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    return settings


async def _keep_running(
    name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run ``loop`` (arq's loop for the cron queue, or a delivery queue's) until ``stop``,
    restarting it whatever ends it: a loop that died silently would strand its jobs until
    the process is restarted, and arq's exits when Redis goes away."""
    while not stop.is_set():
        try:
            await loop()
        except (RedisError, OSError) as exc:
            logger.warning(
                "lost Redis; the worker reconnects",
                extra={"queue": name, "error": f"{type(exc).__name__}: {exc}"},
            )
        except Exception:
            logger.exception("worker loop failed; restarting it", extra={"queue": name})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RESTART_DELAY)


async def run_worker(settings: Settings, redis_url: str, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then finish in-flight deliveries (up to their timeout)."""
    pool = await create_pool(redis_settings(redis_url))
    app = await WorkerContext.open(settings, pool)
    cron_worker = WorkerSettings.from_settings(settings).worker(pool, {"relay": app})
    queues = delivery_queues(app)
    supervisor = PollSupervisor(app)
    tasks = [asyncio.create_task(supervisor.run(), name="poll-supervisor")]
    consumers = [
        asyncio.create_task(
            _keep_running(q.queue_name, functools.partial(q.run, stop), stop), name=q.queue_name
        )
        for q in queues
    ]
    tasks += consumers
    tasks.append(
        asyncio.create_task(_keep_running(CRON_QUEUE, cron_worker.main, stop), name=CRON_QUEUE)
    )
    logger.info("worker started", extra={"worker": app.worker_id})
    try:
        await stop.wait()
    finally:
        logger.info("worker stopping: finishing in-flight deliveries")
        supervisor.stop.set()
        cron_worker.allow_pick_jobs = False
        await asyncio.wait(consumers, timeout=5)  # they stop claiming at once
        await asyncio.gather(*(q.drain(within=settings.delivery_timeout + 5) for q in queues))
        await asyncio.wait_for(tasks[0], timeout=settings.poll_lease + 5)
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await pool.delete(cron_worker.health_check_key)
        await app.close()
        await pool.aclose()
        logger.info("worker stopped", extra={"worker": app.worker_id})
