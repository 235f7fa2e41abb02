"""``UTCDateTime``: aware UTC in and out, on the real database; SQLite's text unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite.base import DATETIME

from relay.db import Database
from relay.db.models import Subscription
from relay.db.tables import table_of
from relay.db.types import UTCDateTime

MOMENTS = [
    datetime(2026, 12, 2, 18, 1, 2, tzinfo=UTC),
    datetime(2026, 12, 2, 18, 1, 2, 5, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
    datetime(1, 1, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_sqlite_text_is_what_sqlalchemy_stored_before(moment: datetime) -> None:
    """Rows written before keep comparing right (``next_attempt_at <= ?`` compares text)."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = DATETIME().bind_processor(dialect)
    assert ours is not None
    assert theirs is not None
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))


def test_the_same_object_twice_and_values_in_turn() -> None:
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    a, b = MOMENTS[0], MOMENTS[1]
    assert [process(v) for v in (a, a, b, a, b, b, None, a)] == [
        "2026-12-02 18:01:02.000000",
        "2026-12-02 18:01:02.000000",
        "2026-12-02 18:01:02.000005",
        "2026-12-02 18:01:02.000000",
        "2026-12-02 18:01:02.000005",
        "2026-12-02 18:01:02.000005",
        None,
        "2026-12-02 18:01:02.000000",
    ]


@pytest.mark.parametrize("value", [datetime(2026, 12, 2, 18, 1, 2), "2026-12-02", 0])
def test_refuses_what_is_not_an_aware_datetime(value: object) -> None:
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    process(MOMENTS[0])  # a cached value does not let another one through
    with pytest.raises(ValueError, match="expected an aware datetime"):
        process(value)


async def test_round_trip_and_order_on_the_database(db: Database) -> None:
    subs = table_of(Subscription)
    rows = [
        Subscription(owner="o", url="http://127.0.0.1:9/", secret="whsec_x", created_at=m)
        for m in MOMENTS
    ]
    async with db.write() as session:
        session.add_all(rows)
    async with db.read() as session:
        conn = await session.connection()
        stored = (
            (await conn.execute(sa.select(subs.c.created_at).order_by(subs.c.created_at)))
            .scalars()
            .all()
        )
        after = (
            await conn.execute(
                sa.select(sa.func.count()).where(subs.c.created_at > MOMENTS[2]),
            )
        ).scalar_one()
    assert stored == sorted(MOMENTS)
    assert all(m.tzinfo is UTC for m in stored)
    assert after == 2  # 1999-12-31 23:59:59.999999-05:00 is 2000-01-01 04:59:59.999999 UTC


def test_a_literal_in_the_sql_is_converted_too() -> None:
    column = sa.column("at", UTCDateTime())
    at = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    sql = str(
        (column == at).compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    )
    assert "2026-01-01 10:00:00.000000" in sql
    with pytest.raises(sa.exc.CompileError, match="Could not render literal value"):
        str(
            (column == datetime(2026, 1, 1)).compile(
                dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
            )
        )
