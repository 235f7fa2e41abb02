"""Prometheus metrics, read from the database at scrape time.

The database is the one place every API and worker process writes to, so one scrape of any
``relay serve`` sees the whole deployment, however many workers run on however many hosts.
Counters are ``COUNT(*)`` over retained rows (events and attempts are purged after the
retention period, so they are "ingested / attempted within retention"); a scrape is cached for
a few seconds so a busy Prometheus cannot turn into database load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, or_
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from relay.db import Database, utcnow
from relay.db.models import (
    WAITING,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    District,
    Event,
    Subscription,
)

LATENCY_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
OVERDUE = timedelta(seconds=60)
CACHE_SECONDS = 5.0


@dataclass
class Snapshot:
    events: list[tuple[str, str, int]] = field(default_factory=list)
    deliveries: list[tuple[str, int]] = field(default_factory=list)
    attempt_buckets: list[int] = field(default_factory=list)
    attempt_count: int = 0
    attempt_sum_ms: int = 0
    overdue: int = 0
    districts: list[tuple[str, str, float | None]] = field(default_factory=list)
    failing_subscriptions: int = 0
    disabled_subscriptions: int = 0


async def take_snapshot(db: Database, now: datetime | None = None) -> Snapshot:
    now = now or utcnow()
    snap = Snapshot()
    async with db.read() as session:
        rows = await session.exec(
            select(Event.district_id, Event.type, func.count()).group_by(
                col(Event.district_id), col(Event.type)
            )
        )
        snap.events = [(d, t, int(n)) for d, t, n in rows.all()]
        rows2 = await session.exec(
            select(Delivery.status, func.count()).group_by(col(Delivery.status))
        )
        snap.deliveries = [(s, int(n)) for s, n in rows2.all()]
        buckets = [
            func.coalesce(func.sum(case((col(DeliveryAttempt.duration_ms) <= b, 1), else_=0)), 0)
            for b in LATENCY_BUCKETS_MS
        ]
        connection = await session.connection()
        totals: Sequence[object] = (
            await connection.execute(
                sa_select(
                    func.count(), func.coalesce(func.sum(DeliveryAttempt.duration_ms), 0), *buckets
                ).select_from(DeliveryAttempt)
            )
        ).one()
        snap.attempt_count, snap.attempt_sum_ms = _int(totals[0]), _int(totals[1])
        snap.attempt_buckets = [_int(v) for v in totals[2:]]
        snap.overdue = int(
            (
                await session.exec(
                    select(func.count())
                    .select_from(Delivery)
                    .where(col(Delivery.status).in_(WAITING))
                    .where(col(Delivery.next_attempt_at) <= now - OVERDUE)
                )
            ).one()
        )
        districts = (await session.exec(select(District))).all()
        snap.districts = [(d.id, d.status, d.lag_seconds(now)) for d in districts]
        subs = await session.exec(
            select(
                func.coalesce(
                    func.sum(case((col(Subscription.failing_since).is_not(None), 1), else_=0)), 0
                ),
                func.coalesce(
                    func.sum(case((col(Subscription.enabled).is_(False), 1), else_=0)), 0
                ),
            ).where(
                or_(
                    col(Subscription.enabled).is_(False),
                    col(Subscription.failing_since).is_not(None),
                )
            )
        )
        failing, disabled = subs.one()
        snap.failing_subscriptions, snap.disabled_subscriptions = int(failing), int(disabled)
    return snap


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float | str | Decimal) else 0


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        events = CounterMetricFamily(
            "relay_events_ingested", "Clever events stored (within retention)",
            labels=["district", "type"],
        )  # fmt: skip
        for district, event_type, n in s.events:
            events.add_metric([district, event_type], n)
        yield events
        deliveries = GaugeMetricFamily(
            "relay_deliveries", "Deliveries by status (within retention)", labels=["status"]
        )
        seen = dict(s.deliveries)
        for known in DeliveryStatus:
            deliveries.add_metric([known.value], seen.get(known.value, 0))
        yield deliveries
        yield HistogramMetricFamily(
            "relay_delivery_attempt_duration_milliseconds",
            "Webhook attempt durations (within retention)",
            buckets=_buckets(LATENCY_BUCKETS_MS, s.attempt_buckets, s.attempt_count),
            sum_value=s.attempt_sum_ms,
        )
        yield GaugeMetricFamily(
            "relay_deliveries_overdue",
            f"Deliveries due more than {OVERDUE.seconds}s ago and not yet attempted",
            value=s.overdue,
        )
        lag = GaugeMetricFamily(
            "relay_district_lag_seconds",
            "How far behind Clever each district is",
            labels=["district"],
        )
        status = GaugeMetricFamily(
            "relay_district_status", "1 for the district's current status",
            labels=["district", "status"],
        )  # fmt: skip
        for district, state, seconds in s.districts:
            if seconds is not None:
                lag.add_metric([district], seconds)
            status.add_metric([district, state], 1)
        yield lag
        yield status
        yield GaugeMetricFamily(
            "relay_subscriptions_failing",
            "Subscriptions whose recent attempts all failed",
            value=s.failing_subscriptions,
        )
        yield GaugeMetricFamily(
            "relay_subscriptions_disabled", "Disabled subscriptions", value=s.disabled_subscriptions
        )


def _buckets(bounds: Sequence[int], counts: Sequence[int], total: int) -> list[tuple[str, float]]:
    return [(str(b), float(c)) for b, c in zip(bounds, counts, strict=True)] + [
        ("+Inf", float(total))
    ]


class MetricsEndpoint:
    """Renders the metrics, at most one database snapshot per ``CACHE_SECONDS``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._text = b""
        self._taken = -CACHE_SECONDS
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        async with self._lock:
            if time.monotonic() - self._taken >= CACHE_SECONDS:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(SnapshotCollector(await take_snapshot(self.db)))
                self._text = generate_latest(registry)
                self._taken = time.monotonic()
            return self._text
