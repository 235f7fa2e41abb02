"""``WorkerSettings`` and the worker process: three arq queues and the poll supervisor.

- ``relay:deliveries`` carries first attempts, ``relay:retries`` later ones, each with its own
  job slots, so retries piling up for a dead endpoint never delay first attempts elsewhere.
- ``relay:cron`` runs the periodic jobs (reconciler, district discovery) and nothing else.
  arq keeps a running job's "in progress" mark for its worker's longest job timeout + 10 s,
  and that is how long a job of a killed worker waits before another worker runs it again:
  with the crons' 120 s timeout in a delivery queue, a kill -9 would delay its in-flight
  deliveries by over two minutes instead of ``RELAY_DELIVERY_TIMEOUT`` + 15 s.
- The poll supervisor is not an arq job: polling is driven by database leases, so it keeps
  working while Redis is down (deliveries wait in the outbox meanwhile).
- arq exits when Redis goes away; here each queue's worker loop is restarted instead, and the
  Redis client retries commands with backoff, so a Redis restart needs no worker restart.
- The reconciler (``workers.reconcile``) runs every ``RELAY_RECONCILE_INTERVAL`` seconds
  (default 10): how long a delivery lost from Redis (flush, restart without persistence)
  waits before it is queued again. Values that do not divide 60 still work, with one shorter
  gap each minute (arq cron has a one-minute cycle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from arq import cron
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.cron import CronJob
from arq.worker import Function, Worker, func
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
from workers.job_start import BatchStartWorker
from workers.poll import PollSupervisor
from workers.reconcile import reconcile
from workers.retention import purge_expired

logger = logging.getLogger("relay.worker")

RESTART_DELAY = 1.0
CRON_QUEUE = "relay:cron"
CRON_TIMEOUT = 120
DISCOVER_EVERY_MINUTES = 5
PURGE_AT_MINUTE = 17  # hourly
FIRST_ATTEMPTS_MAX_JOBS = 100
RETRIES_MAX_JOBS = 50


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
    reconcile_every: int = 10

    @classmethod
    def for_queues(cls, settings: Settings) -> list[WorkerSettings]:
        # Just above the delivery timeout: a killed worker's job is re-run after this much
        # (+10 s in arq), not after arq's default 300 s.
        timeout = settings.delivery_timeout + 5
        return [
            cls(
                FIRST_ATTEMPTS_QUEUE,
                max_jobs=FIRST_ATTEMPTS_MAX_JOBS,
                job_timeout=timeout,
                cron=False,
            ),
            cls(RETRIES_QUEUE, max_jobs=RETRIES_MAX_JOBS, job_timeout=timeout, cron=False),
            cls(
                CRON_QUEUE,
                max_jobs=4,
                job_timeout=CRON_TIMEOUT,
                cron=True,
                reconcile_every=settings.reconcile_interval,
            ),
        ]

    def worker(self, pool: ArqRedis, ctx: dict[str, Any]) -> Worker:
        if not self.cron:
            return self._worker(pool, ctx, [self._deliver_function()], [])
        return self._worker(pool, ctx, [], self._cron_jobs())

    def _deliver_function(self) -> Function:
        return func(
            deliver,
            name=DELIVER_FUNCTION,
            timeout=self.job_timeout,
            keep_result=self.keep_result,
            max_tries=self.max_tries,
        )

    def _cron_jobs(self) -> list[CronJob]:
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

    def _worker(
        self, pool: ArqRedis, ctx: dict[str, Any], functions: list[Function], crons: list[CronJob]
    ) -> Worker:
        return BatchStartWorker(
            functions=functions,
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


class DeliverJobLinesAtDebug(logging.Filter):
    """arq logs two INFO lines per job (started, finished; "retrying" for a busy
    subscription): with the relay's own line, three JSON lines per webhook, a measurable
    share of a busy worker's CPU. The deliver jobs' lines pass only when DEBUG is on; the
    cron jobs' and arq's other lines are untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not str(record.msg).startswith("%6.2fs"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        ref = str(args[1]) if len(args) > 1 else ""
        return not ref.startswith(DELIVER_FUNCTION + ":") or logger.isEnabledFor(logging.DEBUG)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 60
    settings.conn_timeout = 2
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    return settings


async def _keep_running(worker: Worker, stop: asyncio.Event) -> None:
    """Run arq's loop for one queue until ``stop``, restarting it whatever ends it: a queue
    whose loop died silently would strand its jobs until the process is restarted."""
    while not stop.is_set():
        try:
            await worker.main()
        except (RedisError, OSError) as exc:
            logger.warning(
                "lost Redis; the worker reconnects",
                extra={"queue": worker.queue_name, "error": f"{type(exc).__name__}: {exc}"},
            )
        except Exception:
            logger.exception(
                "worker loop failed; restarting it", extra={"queue": worker.queue_name}
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RESTART_DELAY)


async def run_worker(settings: Settings, redis_url: str, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then finish in-flight deliveries (up to their timeout)."""
    arq_logger = logging.getLogger("arq.worker")
    if not any(isinstance(f, DeliverJobLinesAtDebug) for f in arq_logger.filters):
        arq_logger.addFilter(DeliverJobLinesAtDebug())
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
