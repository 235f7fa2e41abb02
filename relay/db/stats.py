"""Per-subscription delivery statistics, counted as attempts are recorded.

``GET /v1/subscriptions/{id}/stats`` must stay fast with millions of deliveries, so it never
scans them: the record transaction adds each attempt to its subscription's row for that hour
(``subscription_hours``: counts, a duration histogram, the last success and failure), one
upsert per subscription and hour touched by the batch. A window then reads at most one row per
hour (168 for a week). Percentiles are estimated from the histogram, interpolating within the
bucket the rank falls in, as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.db.models import (
    DURATION_BOUNDS_MS,
    DURATION_COLUMNS,
    SubscriptionHour,
)
from relay.db.tables import table_of

_SUMS = ("attempts", "succeeded", "failed", "deliveries_failed", "duration_ms", *DURATION_COLUMNS)
_LATEST = ("last_success_at", "last_failure_at")


class Counted(NamedTuple):
    """One recorded attempt, as the statistics need it."""

    subscription_id: str
    attempted_at: datetime
    succeeded: bool
    duration_ms: int
    delivery_failed: bool  # the attempt ended its delivery as failed


_HOUR_ZERO, _AN_HOUR = datetime(1970, 1, 1, tzinfo=UTC), timedelta(hours=1)


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _bucket(duration_ms: int) -> str:
    """The histogram column of ``duration_ms``: the first bound it does not exceed, or the
    open bucket (``DURATION_COLUMNS`` has one more column than there are bounds)."""
    return DURATION_COLUMNS[bisect.bisect_left(DURATION_BOUNDS_MS, duration_ms)]


def _tally(counted: Iterable[Counted]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for c in counted:
        # the hour as a number: an aware datetime's replace() per attempt was most of this
        key = (c.subscription_id, int(c.attempted_at.timestamp()) // 3600)
        row = rows.get(key)
        if row is None:  # not setdefault: its default, three dicts, was built per attempt
            row = {"subscription_id": c.subscription_id, "hour": _HOUR_ZERO + key[1] * _AN_HOUR}
            row |= dict.fromkeys(_SUMS, 0) | dict.fromkeys(_LATEST)
            rows[key] = row
        row["attempts"] += 1
        row["succeeded" if c.succeeded else "failed"] += 1
        row["deliveries_failed"] += int(c.delivery_failed)
        row["duration_ms"] += c.duration_ms
        row[_bucket(c.duration_ms)] += 1
        latest = "last_success_at" if c.succeeded else "last_failure_at"
        if row[latest] is None or c.attempted_at > row[latest]:
            row[latest] = c.attempted_at
    # a fixed lock order, so two workers' batches cannot deadlock on each other's rows
    return [rows[key] for key in sorted(rows)]


def _upsert(dialect: Any) -> Any:
    table = table_of(SubscriptionHour)
    stmt = dialect.insert(table)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[table.c.subscription_id, table.c.hour],
        set_={name: table.c[name] + new[name] for name in _SUMS}
        | {
            name: sa.case(
                (sa.or_(table.c[name].is_(None), new[name] > table.c[name]), new[name]),
                else_=table.c[name],
            )
            for name in _LATEST
        },
    )


#: one upsert per dialect, built once and run for many rows: a multi-row VALUES has a
#: different text for every number of rows (compiled and prepared again each time), and
#: an ``ON CONFLICT … SET`` built from a dict has no cache key, so it compiled every time
_UPSERTS = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}


async def count_attempts(conn: AsyncConnection, counted: Iterable[Counted]) -> None:
    """Add ``counted`` to the hourly rows, in the caller's (record) transaction."""
    rows = _tally(counted)
    if rows:
        await conn.execute(_UPSERTS[conn.dialect.name], rows)


@dataclass
class Stats:
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0
    deliveries_failed: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * len(DURATION_COLUMNS))
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None

    @property
    def success_rate(self) -> float | None:
        return round(self.succeeded / self.attempts, 4) if self.attempts else None

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile of the attempt durations, interpolated within its bucket."""
        total = sum(self.histogram)
        if not total:
            return None
        rank, seen, lower = q * total, 0, 0.0
        for count, upper in zip(self.histogram, DURATION_BOUNDS_MS, strict=False):
            if count and seen + count >= rank:
                return round(lower + (upper - lower) * (rank - seen) / count, 1)
            seen, lower = seen + count, float(upper)
        return float(DURATION_BOUNDS_MS[-1])  # in the open bucket: at least the last bound


async def read_stats(
    conn: AsyncConnection, subscription_id: str, window: timedelta, now: datetime
) -> Stats:
    """The window's counts (whole hours: the hour ``now - window`` falls in onwards); the last
    success and failure over every hour kept, whatever the window."""
    table = table_of(SubscriptionHour)
    mine = table.c.subscription_id == subscription_id
    in_window = table.c.hour >= _hour(now - window)
    sums = [
        sa.func.coalesce(sa.func.sum(sa.case((in_window, table.c[name]), else_=0)), 0)
        for name in ("attempts", "succeeded", "failed", "deliveries_failed", *DURATION_COLUMNS)
    ]
    row = (
        await conn.execute(
            sa.select(
                *sums, sa.func.max(table.c.last_success_at), sa.func.max(table.c.last_failure_at)
            ).where(mine)
        )
    ).one()
    values = [int(v) for v in row[: len(sums)]]
    return Stats(
        attempts=values[0],
        succeeded=values[1],
        failed=values[2],
        deliveries_failed=values[3],
        histogram=values[4:],
        last_success_at=row[-2],
        last_failure_at=row[-1],
    )
