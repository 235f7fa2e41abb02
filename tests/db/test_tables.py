"""``one_of``: a list bound as one parameter, on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from relay.db import Database
from relay.db.models import Delivery, Subscription
from relay.db.tables import insert_pending, one_of, table_of
from tests.support.deliveries import add_deliveries


async def test_one_of_matches_the_listed_values_whatever_their_number(db: Database) -> None:
    subs = [Subscription(owner="o", url="http://127.0.0.1:9/", secret="whsec_x") for _ in "ab"]
    async with db.write() as session:
        session.add_all(subs)
    sub_a = subs[0].id
    ids = await add_deliveries(db, subs, 3)
    deliveries, subscriptions = table_of(Delivery), table_of(Subscription)
    by_id = sa.select(deliveries.c.id).where(one_of(deliveries.c.id, "ids"))
    by_sub = sa.select(subscriptions.c.id).where(
        one_of(subscriptions.c.id, "ids", subscriptions.c.id.type)
    )
    async with db.read() as session:
        conn = await session.connection()
        for wanted in ([], ids[:1], ids[1:4], [*ids, -1, ids[0]]):
            found = (await conn.execute(by_id, {"ids": wanted})).scalars().all()
            assert sorted(found) == sorted(set(wanted) - {-1})
        found = (await conn.execute(by_sub, {"ids": [sub_a, "nope"]})).scalars().all()
        assert found == [sub_a]


def test_one_of_is_one_placeholder_and_cached() -> None:
    deliveries = table_of(Delivery)
    statement = sa.select(deliveries.c.id).where(one_of(deliveries.c.id, "ids"))
    assert "= ANY(" in str(statement.compile(dialect=postgresql.dialect()))
    assert "json_each(?)" in str(statement.compile(dialect=sqlite.dialect()))
    assert statement._generate_cache_key() is not None  # compiled once, then cached


async def test_insert_pending_adds_only_new_deliveries_due_now(db: Database) -> None:
    subs = [Subscription(owner="o", url="http://127.0.0.1:9/", secret="whsec_x") for _ in "ab"]
    async with db.write() as session:
        session.add_all(subs)
    a, b = (s.id for s in subs)
    now = datetime(2026, 12, 2, 18, 0, 0, 123456, tzinfo=UTC)
    page = [(sub, f"e{n:05}", "users.updated") for n in range(2500) for sub in (a, b)]
    async with db.write() as session:
        first = await insert_pending(await session.connection(), page, now)
    assert set(first) == {(s, e) for s, e, _ in page}
    assert len(set(first.values())) == 5000
    again = [*page[:10], (a, "e-new", "sections.created")]  # a page fetched twice, and one more
    async with db.write() as session:
        second = await insert_pending(await session.connection(), again, now + timedelta(seconds=1))
    assert list(second) == [(a, "e-new")]
    async with db.read() as session:
        rows = (await session.exec(select(Delivery).where(col(Delivery.event_id) == "e-new"))).all()
        [row] = rows
        kept = (
            await session.exec(select(Delivery).where(col(Delivery.id) == first[(a, "e00000")]))
        ).one()
    assert (row.status, row.attempts, row.manual_attempts, row.manual_retry) == (
        "pending",
        0,
        0,
        False,
    )
    assert (row.event_type, row.waiting_for) == ("sections.created", None)
    assert row.next_attempt_at == row.created_at == row.updated_at == now + timedelta(seconds=1)
    assert kept.next_attempt_at == now  # a delivery that existed is left as it was
