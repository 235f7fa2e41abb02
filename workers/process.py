"""The worker process: what ``relay worker`` runs, wired in one place.

- two delivery consumers: ``relay:deliveries`` carries first attempts, ``relay:retries``
  later ones, each with its own job slots, so retries piling up for a dead endpoint never
  delay first attempts elsewhere;
- the poll supervisor, which is not an arq job: polling is driven by database leases, so it
  keeps working while Redis is down (deliveries wait in the database meanwhile). It runs in
  a child process (``workers.polling``, ``RELAY_POLL_PROCESS``), so a thousand districts'
  polls do not share this event loop with first attempts, or in this loop when that is off;
- the replay loop, which works through ``POST …/replay`` requests in batches, and the
  bootstrap loop, the same for ``POST …/bootstrap``;
- arq's cron worker (``workers.settings``).

Each runs under ``relay.loops.supervise``: arq exits when Redis goes away, and a loop that
died silently would strand its jobs, so each is restarted instead, and the Redis client
retries commands with backoff: a Redis restart needs no worker restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging

from redis.exceptions import RedisError

from relay import counters
from relay.delivery.bootstrap import BootstrapRunner
from relay.delivery.consumer import DeliveryConsumer
from relay.delivery.replay import ReplayRunner
from relay.loops import supervise
from relay.polling.supervisor import PollSupervisor
from relay.queue import FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE, open_redis
from relay.queue.jobs import CRON_QUEUE
from relay.settings import Settings
from relay.tuning import GcTuning
from workers.context import WorkerContext
from workers.polling import PollingProcess
from workers.settings import WorkerSettings

logger = logging.getLogger("relay.worker")


def tune_garbage_collector(tuning: GcTuning) -> None:
    """For a process about to run a worker (``relay worker``, ``relay run``): what exists by
    now (modules, classes, settings) is frozen out of every collection, and collections
    wait for more allocations (``GcTuning``: a quarter of a busy worker's CPU otherwise)."""
    gc.freeze()
    gc.set_threshold(*tuning.threshold)


def delivery_consumers(app: WorkerContext) -> list[DeliveryConsumer]:
    tuning = app.tuning.delivery
    return [
        DeliveryConsumer(
            app.queue,
            app.pipeline,
            queue_name,
            max_jobs=max_jobs,
            timeouts=app.tuning.timeouts,
            tuning=tuning,
        )
        for queue_name, max_jobs in (
            (FIRST_ATTEMPTS_QUEUE, tuning.first_attempt_jobs),
            (RETRIES_QUEUE, tuning.retry_jobs),
        )
    ]


async def run_worker(settings: Settings, redis_url: str, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then finish in-flight deliveries (up to their timeout)."""
    metrics = counters.serve(settings.metrics_port) if settings.metrics_port else None
    pool = await open_redis(redis_url)
    app = await WorkerContext.open(settings, pool)
    restart = app.tuning.restart_delay
    cron_worker = WorkerSettings.from_settings(settings).worker(pool, {"relay": app})
    consumers = delivery_consumers(app)
    poller = (
        PollingProcess(settings, redis_url, app.worker_id, restart_delay=restart)
        if settings.poll_process
        else PollSupervisor(app.polling, restart_delay=restart)
    )

    async def cron_step() -> float:
        await cron_worker.main()  # returns only when arq gave up (Redis went away)
        return restart

    polling = asyncio.create_task(poller.run(), name="polling")
    consuming = [
        asyncio.create_task(
            supervise(c.queue_name, functools.partial(c.step, stop), stop, restart_delay=restart),
            name=c.queue_name,
        )
        for c in consumers
    ]
    crons = asyncio.create_task(supervise(CRON_QUEUE, cron_step, stop, restart_delay=restart))
    tuning = app.tuning.delivery
    replays = ReplayRunner(
        app.db,
        app.queue,
        batch=tuning.replay_batch,
        backlog=tuning.replay_backlog,
        idle=tuning.replay_idle,
    )
    replaying = asyncio.create_task(supervise("replays", replays.step, stop, restart_delay=restart))
    bootstraps = BootstrapRunner(
        app.db,
        app.queue,
        batch=tuning.replay_batch,
        backlog=tuning.replay_backlog,
        idle=tuning.replay_idle,
    )
    bootstrapping = asyncio.create_task(
        supervise("bootstraps", bootstraps.step, stop, restart_delay=restart)
    )
    logger.info(
        "worker started", extra={"worker": app.worker_id, "metrics_port": settings.metrics_port}
    )
    try:
        await stop.wait()
    finally:
        logger.info("worker stopping: finishing in-flight deliveries")
        poller.stop.set()
        cron_worker.allow_pick_jobs = False
        await asyncio.wait(consuming, timeout=5)  # they stop claiming at once
        await asyncio.gather(*(c.drain(within=app.tuning.timeouts.job) for c in consumers))
        await asyncio.wait_for(polling, timeout=settings.poll_lease + 5)
        for task in [*consuming, crons, replaying, bootstrapping]:
            task.cancel()
        await asyncio.gather(
            polling, *consuming, crons, replaying, bootstrapping, return_exceptions=True
        )
        with contextlib.suppress(RedisError, OSError):
            await pool.delete(cron_worker.health_check_key)
        await app.close()
        await pool.aclose()
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)
            metrics.server_close()
        logger.info("worker stopped", extra={"worker": app.worker_id})
