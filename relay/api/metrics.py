"""``/metrics`` of ``relay serve``: the deployment-wide gauges, read at scrape time.

The database is the one place every API and worker process writes to, so one scrape of any
``relay serve`` sees the whole deployment's state: deliveries waiting, overdue and failed,
each district's lag and status, failing and disabled subscriptions, the Redis queue depth.
Every query is bounded whatever the history: an index range over the rows that are waiting or
failed (``ix_deliveries_status_next_attempt_at``), the districts, the unhealthy
subscriptions; never a ``COUNT(*)`` over events or attempts. Counters (attempts, Clever
requests, events ingested) are counted by the worker that did the work (``relay.counters``,
on ``RELAY_METRICS_PORT``); ``relay run`` is one process and adds them here. A scrape is
cached for a few seconds so a busy Prometheus cannot turn into database load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, case, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import Database, utcnow
from relay.db.models import WAITING, Delivery, DeliveryStatus, District, Subscription, lag_seconds
from relay.db.tables import table_of
from relay.queue import RedisQueue

OVERDUE = timedelta(seconds=60)
CACHE_SECONDS = 5.0


@dataclass
class Snapshot:
    waiting: dict[str, int] = field(default_factory=dict)
    overdue: int = 0
    failed: int = 0
    districts: list[tuple[str, str, float | None]] = field(default_factory=list)
    failing_subscriptions: int = 0
    disabled_subscriptions: int = 0
    queues: dict[str, tuple[int, int]] | None = None  # None: Redis not configured or down


async def take_snapshot(
    db: Database, queue: RedisQueue | None = None, now: datetime | None = None
) -> Snapshot:
    """The deliveries' counts, and the rest (districts, subscriptions, Redis), read
    concurrently on two connections: a scrape costs the slower of the two."""
    now = now or utcnow()
    snap = Snapshot()
    await asyncio.gather(_deliveries(db, snap, now), _the_rest(db, queue, snap, now))
    return snap


async def _deliveries(db: Database, snap: Snapshot, now: datetime) -> None:
    """Index ranges of ``ix_deliveries_status_next_attempt_at``: the waiting and failed rows
    (one scan), the overdue ones; never the succeeded history."""
    async with db.read() as session:
        counted = await session.exec(
            select(Delivery.status, func.count())
            .where(col(Delivery.status).in_([*WAITING, DeliveryStatus.FAILED]))
            .group_by(col(Delivery.status))
        )
        by_status = {status: int(n) for status, n in counted.all()}
        snap.overdue = await _count(
            session,
            col(Delivery.status).in_(WAITING),
            col(Delivery.next_attempt_at) <= now - OVERDUE,
        )
    snap.failed = by_status.pop(DeliveryStatus.FAILED, 0)
    snap.waiting = by_status


async def _the_rest(db: Database, queue: RedisQueue | None, snap: Snapshot, now: datetime) -> None:
    districts = table_of(District)
    async with db.read() as session:
        rows = await (await session.connection()).execute(
            sa_select(
                districts.c.id,
                districts.c.status,
                districts.c.cursor,
                districts.c.caught_up,
                districts.c.last_polled_at,
            )
        )
        snap.districts = [
            (r.id, r.status, lag_seconds(now, r.last_polled_at, r.caught_up, r.cursor))
            for r in rows
        ]
        snap.failing_subscriptions, snap.disabled_subscriptions = await _unhealthy(session)
    if queue is not None:
        try:
            snap.queues = await queue.depth()
        except (RedisError, OSError):
            snap.queues = None


async def _count(session: AsyncSession, *conditions: ColumnElement[bool]) -> int:
    query = select(func.count()).select_from(Delivery).where(*conditions)
    return int((await session.exec(query)).one())


async def _unhealthy(session: AsyncSession) -> tuple[int, int]:
    """(failing, disabled) subscriptions: only the unhealthy rows are read."""
    failing = col(Subscription.failing_since).is_not(None)
    disabled = col(Subscription.enabled).is_(False)
    row = await session.exec(
        select(
            func.coalesce(func.sum(case((failing, 1), else_=0)), 0),
            func.coalesce(func.sum(case((disabled, 1), else_=0)), 0),
        ).where(or_(disabled, failing))
    )
    n_failing, n_disabled = row.one()
    return int(n_failing), int(n_disabled)


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        waiting = GaugeMetricFamily(
            "relay_deliveries_waiting",
            "Deliveries still expecting an attempt (pending includes those waiting their turn "
            "in an ordered chain)",
            labels=["status"],
        )
        for status in WAITING:
            waiting.add_metric([status.value], s.waiting.get(status.value, 0))
        yield waiting
        yield GaugeMetricFamily(
            "relay_deliveries_overdue",
            f"Deliveries due more than {OVERDUE.seconds}s ago and not yet attempted",
            value=s.overdue,
        )
        yield GaugeMetricFamily(
            "relay_deliveries_failed",
            "Deliveries that ended failed (schedule exhausted or 410), within retention",
            value=s.failed,
        )
        yield from self._districts()
        yield GaugeMetricFamily(
            "relay_subscriptions_failing",
            "Subscriptions whose recent attempts all failed",
            value=s.failing_subscriptions,
        )
        yield GaugeMetricFamily(
            "relay_subscriptions_disabled", "Disabled subscriptions", value=s.disabled_subscriptions
        )
        if s.queues is not None:
            queued = GaugeMetricFamily(
                "relay_queue_jobs", "Jobs in a Redis delivery queue", labels=["queue", "state"]
            )
            for queue, (total, due) in s.queues.items():
                queued.add_metric([queue, "due"], due)
                queued.add_metric([queue, "scheduled"], total - due)
            yield queued

    def _districts(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "relay_district_lag_seconds",
            "How far behind Clever each district is",
            labels=["district"],
        )
        status = GaugeMetricFamily(
            "relay_district_status", "1 for the district's current status",
            labels=["district", "status"],
        )  # fmt: skip
        for district, state, seconds in self.snap.districts:
            if seconds is not None:
                lag.add_metric([district], seconds)
            status.add_metric([district, state], 1)
        yield lag
        yield status


class MetricsEndpoint:
    """Renders the metrics, at most one database snapshot per ``CACHE_SECONDS``.
    ``process_counters``: add this process's own counters (``relay run``, where the worker
    runs in the API's process)."""

    def __init__(
        self,
        db: Database,
        queue: RedisQueue | None = None,
        *,
        process_counters: bool = False,
    ) -> None:
        self.db = db
        self.queue = queue
        self.process_counters = process_counters
        self._text = b""
        self._taken = -CACHE_SECONDS
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        async with self._lock:
            if time.monotonic() - self._taken >= CACHE_SECONDS:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(SnapshotCollector(await take_snapshot(self.db, self.queue)))
                self._text = generate_latest(registry)
                if self.process_counters:
                    self._text += generate_latest(REGISTRY)
                self._taken = time.monotonic()
            return self._text
