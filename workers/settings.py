"""``WorkerSettings``: the arq worker of the cron queue, and its jobs as thin calls into
``relay``.

The delivery queues are not consumed by arq's one-job-at-a-time ``Worker`` but by
``relay.delivery.consumer`` (claimed and finished in bulk); the cron queue is, running the
reconciler, retention and district discovery. The reconciler runs every
``RELAY_RECONCILE_INTERVAL`` seconds (default 10): how long a delivery lost from Redis (flush,
restart without persistence) waits before it is queued again. Values that do not divide 60
still work, with one shorter gap each minute (arq cron has a one-minute cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arq import cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.worker import Worker

from relay.db import retention
from relay.polling import discovery
from relay.queue.jobs import CRON_QUEUE
from relay.queue.reconcile import Reconciler
from relay.settings import Settings
from relay.tuning import CronTuning
from workers.context import context_of


async def reconcile(ctx: dict[str, Any]) -> int:
    app = context_of(ctx)
    return await Reconciler(app.db, app.queue, app.tuning.reconcile).run()


async def purge_expired(ctx: dict[str, Any]) -> int:
    app = context_of(ctx)
    batch = app.tuning.cron.purge_batch
    return await retention.purge_expired(app.db, app.settings.retention_days, batch)


async def discover_districts(ctx: dict[str, Any]) -> int:
    app = context_of(ctx)
    return await discovery.discover_districts(app.settings, app.db)


@dataclass(frozen=True)
class WorkerSettings:
    """The arq worker of the cron queue: the reconciler, retention and district discovery."""

    reconcile_every: int = 10
    tuning: CronTuning = field(default_factory=CronTuning)

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerSettings:
        return cls(reconcile_every=settings.reconcile_interval, tuning=settings.tuning.cron)

    def cron_jobs(self) -> list[CronJob]:
        timeout = self.tuning.timeout
        return [
            cron(
                reconcile,
                second=set(range(0, 60, self.reconcile_every)),
                run_at_startup=True,
                timeout=timeout,
            ),
            cron(purge_expired, minute=self.tuning.purge_at_minute, second=30, timeout=timeout),
            cron(
                discover_districts,
                minute=set(range(0, 60, self.tuning.discover_every_minutes)),
                second=0,
                run_at_startup=True,
                timeout=timeout,
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
            max_jobs=self.tuning.max_jobs,
            job_timeout=self.tuning.timeout,
            keep_result=0,
            poll_delay=self.tuning.poll_delay,
            health_check_interval=self.tuning.health_check_every,
        )
