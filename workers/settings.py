"""``WorkerSettings`` and the worker process: two arq queues and the poll supervisor.

- ``relay:deliveries`` carries first attempts, ``relay:retries`` later ones, each with its own
  job slots, so retries piling up for a dead endpoint never delay first attempts elsewhere.
- The poll supervisor is not an arq job: polling is driven by database leases, so it keeps
  working while Redis is down (deliveries wait in the outbox meanwhile).
- arq exits when Redis goes away; here each queue's worker loop is restarted instead, and the
  Redis client retries commands with backoff, so a Redis restart needs no worker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker, func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.dispatch import DELIVER_FUNCTION, FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE
from relay.settings import Settings
from workers.context import WorkerContext
from workers.deliver import deliver
from workers.discovery import discover_districts
from workers.poll import PollSupervisor
from workers.reconcile import reconcile

logger = logging.getLogger("relay.worker")

RECONCILE_EVERY_SECONDS = 10
DISCOVER_EVERY_MINUTES = 5


@dataclass(frozen=True)
class WorkerSettings:
    """What ``relay worker`` runs; one instance per arq queue."""

    queue_name: str
    max_jobs: int
    job_timeout: float
    cron: bool
    poll_delay: float = 0.05  # arq's 0.5 s default would add up to half a second of latency
    keep_result: int = 0
    health_check_interval: int = 30
    max_tries: int = 1000  # arq Retry is how a busy subscription steps aside; never give up

    @classmethod
    def for_queues(cls, settings: Settings) -> list[WorkerSettings]:
        # Just above the delivery timeout: a killed worker's job is re-run after this much
        # (+10 s in arq), not after arq's default 300 s.
        timeout = settings.delivery_timeout + 5
        return [
            cls(FIRST_ATTEMPTS_QUEUE, max_jobs=100, job_timeout=timeout, cron=True),
            cls(RETRIES_QUEUE, max_jobs=50, job_timeout=timeout, cron=False),
        ]

    def worker(self, pool: ArqRedis, ctx: dict[str, Any]) -> Worker:
        crons = []
        if self.cron:
            crons = [
                cron(
                    reconcile,
                    second=set(range(0, 60, RECONCILE_EVERY_SECONDS)),
                    run_at_startup=True,
                    timeout=120,
                ),
                cron(
                    discover_districts,
                    minute=set(range(0, 60, DISCOVER_EVERY_MINUTES)),
                    second=0,
                    run_at_startup=True,
                    timeout=120,
                ),
            ]
        return Worker(
            functions=[
                func(
                    deliver,
                    name=DELIVER_FUNCTION,
                    timeout=self.job_timeout,
                    keep_result=self.keep_result,
                    max_tries=self.max_tries,
                )
            ],
            cron_jobs=crons,
            queue_name=self.queue_name,
            redis_pool=pool,
            ctx=ctx,
            handle_signals=False,
            max_jobs=self.max_jobs,
            job_timeout=self.job_timeout,
            keep_result=self.keep_result,
            poll_delay=self.poll_delay,
            health_check_interval=self.health_check_interval,
            max_tries=self.max_tries,
        )


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 60
    settings.conn_timeout = 2
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    return settings


async def _keep_running(worker: Worker, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await worker.main()
        except (RedisError, OSError) as exc:
            logger.warning(
                "lost Redis; the worker reconnects",
                extra={"queue": worker.queue_name, "error": f"{type(exc).__name__}: {exc}"},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def run_worker(settings: Settings, redis_url: str, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then finish in-flight deliveries (up to their timeout)."""
    pool = await create_pool(redis_settings(redis_url))
    app = await WorkerContext.open(settings, pool)
    ctx: dict[str, Any] = {"relay": app}
    workers = [options.worker(pool, ctx) for options in WorkerSettings.for_queues(settings)]
    supervisor = PollSupervisor(app)
    tasks = [asyncio.create_task(supervisor.run(), name="poll-supervisor")]
    tasks += [asyncio.create_task(_keep_running(w, stop), name=w.queue_name) for w in workers]
    logger.info("worker started", extra={"worker": app.worker_id})
    try:
        await stop.wait()
    finally:
        logger.info("worker stopping: finishing in-flight deliveries")
        supervisor.stop.set()
        for worker in workers:
            worker.allow_pick_jobs = False
        in_flight = [t for w in workers for t in w.tasks.values() if not t.done()]
        if in_flight:
            await asyncio.wait(in_flight, timeout=settings.delivery_timeout + 5)
        await asyncio.wait_for(tasks[0], timeout=settings.poll_lease + 5)
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await pool.delete(*[w.health_check_key for w in workers])
        await app.close()
        await pool.aclose()
        logger.info("worker stopped", extra={"worker": app.worker_id})
