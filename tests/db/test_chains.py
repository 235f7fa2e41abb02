"""Ordered subscriptions on a real database: the deliveries of one record wait for each
other in Clever's order, and the transaction that ends one releases the next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlmodel import select

from relay.db import Database, chains, utcnow
from relay.db.models import WAITING, Delivery, Replay, Subscription
from relay.db.retention import purge_deliveries
from relay.delivery.replay import ReplayRunner, request_replay
from relay.delivery.sender import AttemptOutcome
from relay.queue import Job, RedisQueue, open_redis
from relay.queue.reconcile import Reconciler
from tests.support.chains import OUTCOMES, World, check_chains


async def test_a_records_events_wait_in_order_and_records_are_independent(db: Database) -> None:
    world = await World(db).create()
    due = await world.page(["a", "b", "a", "a"])
    ordered = await world.deliveries(world.ordered)
    a1, b1, a2, a3 = (d for d, _ in ordered)
    assert (a1.waiting_for, b1.waiting_for, a2.waiting_for, a3.waiting_for) == (
        None,
        None,
        a1.id,
        a2.id,
    )
    # the unordered subscription's four are all due at once, the ordered one's a1 and b1
    unordered = [d.id for d, _ in await world.deliveries(world.unordered)]
    assert sorted(j.delivery_id for j in due) == sorted([a1.id, b1.id, *unordered])
    # a later page chains behind the record's newest waiting delivery
    await world.page(["a"])
    *_, (a4, _) = await world.deliveries(world.ordered)
    assert a4.waiting_for == a3.id
    check_chains(await world.deliveries(world.ordered))


async def test_a_retry_holds_the_chain_and_the_end_releases_it(db: Database) -> None:
    world = await World(db).create()
    await world.page(["a", "a"])
    (a1, _), (a2, _) = await world.deliveries(world.ordered)
    assert await world.finish(a1, OUTCOMES["retry"]) == [
        Job(a1.id or 0, 2, (await world.deliveries(world.ordered))[0][0].next_attempt_at)
    ]
    (a1, _), (a2, _) = await world.deliveries(world.ordered)
    assert (a1.status, a2.waiting_for, a2.next_attempt_at) == ("retrying", a1.id, None)
    released = await world.finish(a1, OUTCOMES["success"])
    (a1, _), (a2, _) = await world.deliveries(world.ordered)
    assert a1.status == "succeeded"
    assert (a2.waiting_for, a2.status) == (None, "pending")
    assert a2.next_attempt_at is not None
    assert [(j.delivery_id, j.attempt) for j in released] == [(a2.id, 1)]


async def test_a_failed_delivery_releases_the_next(db: Database) -> None:
    world = await World(db).create()
    await world.page(["a", "a"])
    (a1, _), _ = await world.deliveries(world.ordered)
    released = await world.finish(a1, OUTCOMES["gone"])  # 410: failed at once
    (a1, _), (a2, _) = await world.deliveries(world.ordered)
    assert a1.status == "failed"
    assert [j.delivery_id for j in released] == [a2.id]


async def test_retention_keeps_a_delivery_someone_waits_for(db: Database) -> None:
    world = await World(db).create()
    await world.page(["a", "a"])
    (a1, _), _ = await world.deliveries(world.ordered)
    old = utcnow() - timedelta(days=60)
    async with db.write() as session:  # an ended delivery still awaited: must never happen,
        row = await session.get(Delivery, a1.id)  # but if it did, the link is kept
        assert row is not None
        row.status, row.created_at = "succeeded", old
        session.add(row)
    assert await purge_deliveries(db, utcnow() - timedelta(days=30), batch=10) == 0


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("page"), st.lists(st.sampled_from("abc"), max_size=4)),
            st.tuples(st.sampled_from(sorted(OUTCOMES)), st.integers(0, 5)),
        ),
        max_size=14,
    )
)
async def test_release_rule_holds_whatever_the_order_of_pages_and_outcomes(
    db: Database, steps: list[tuple[str, object]]
) -> None:
    """Pages of events for three records and outcomes of whatever is due, in any order:
    at every step each record's waiting deliveries form one chain, and only its oldest is
    due; at the end, once everything due is answered with success, nothing is left."""
    world = await World(db).create()
    for kind, arg in steps:
        if kind == "page":
            assert isinstance(arg, list)
            await world.page(arg)
        else:
            due = [d for d, _ in await world.deliveries(world.ordered) if _due(d)]
            if due:
                assert isinstance(arg, int)
                await world.finish(due[arg % len(due)], OUTCOMES[kind])
        check_chains(await world.deliveries(world.ordered))
    for _ in range(100):  # drain: every chain ends, none is stranded
        due = [d for d, _ in await world.deliveries(world.ordered) if _due(d)]
        if not due:
            break
        await world.finish(due[0], OUTCOMES["success"])
    assert all(d.status not in WAITING for d, _ in await world.deliveries(world.ordered))


def _due(delivery: Delivery) -> bool:
    return delivery.status in WAITING and delivery.waiting_for is None


async def test_retry_after_holds_the_chain_like_any_retry(db: Database) -> None:
    world = await World(db).create()
    await world.page(["a", "a"])
    (a1, _), _ = await world.deliveries(world.ordered)
    busy = AttemptOutcome(status_code=503, duration_ms=1, error="http 503", retry_after="5")
    assert [j.delivery_id for j in await world.finish(a1, busy)] == [a1.id]  # its own retry
    (a1, _), (a2, _) = await world.deliveries(world.ordered)
    assert (a1.status, a2.waiting_for, a2.next_attempt_at) == ("retrying", a1.id, None)


async def test_a_disabled_subscription_resumes_each_record_in_order(
    db: Database, redis_url: str
) -> None:
    """410 fails a1 (releasing a2) and disables the subscription; a2 is parked when its job
    runs; re-enabling wakes a2 alone, a3 still waits for it."""
    world = await World(db).create()
    await world.page(["a", "a", "a"])
    (a1, _), _, _ = await world.deliveries(world.ordered)
    await world.finish(a1, OUTCOMES["gone"])
    async with db.write() as session:
        sub = await session.get(Subscription, world.ordered)
        assert sub is not None
        assert not sub.enabled
        (_, (a2, _), _) = await world.deliveries(world.ordered)
        parked = await session.get(Delivery, a2.id)
        assert parked is not None
        parked.next_attempt_at = None  # what the deliver job does for a disabled subscription
        session.add(parked)
        sub.enabled = True
        session.add(sub)
    pool = await open_redis(redis_url)
    try:
        woken = await Reconciler(db, RedisQueue(pool)).unpark()
    finally:
        await pool.aclose()
    _, (a2, _), (a3, _) = await world.deliveries(world.ordered)
    assert [j.delivery_id for j in woken] == [a2.id]
    assert (a3.waiting_for, a3.next_attempt_at) == (a2.id, None)
    check_chains(await world.deliveries(world.ordered))


async def test_a_replay_to_an_ordered_subscription_chains_each_record(
    db: Database, redis_url: str
) -> None:
    """Events stored before the subscription existed, replayed to it: each record's
    deliveries wait for each other in event order, records independent."""
    world = await World(db).create()
    await world.page(["a", "b", "a", "a"])
    late = Subscription(owner="o", url="http://x", secret="s", ordered=True)
    async with db.write() as session:
        session.add(late)
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert await request_replay(db, late, since, utcnow(), batch=3) == 4
    pool = await open_redis(redis_url)
    try:
        runner = ReplayRunner(db, RedisQueue(pool), batch=3, backlog=100, idle=0.0)
        assert await runner.step() == 0.0  # the first three events
        assert await runner.step() == 0.0  # the fourth, and the replay is done
        assert await runner.step() == 0.0  # nothing left: idle (0 here)
    finally:
        await pool.aclose()
    rows = await world.deliveries(late.id)
    a1, b1, a2, a3 = (d for d, _ in rows)
    assert [d.waiting_for for d in (a1, b1, a2, a3)] == [None, None, a1.id, a2.id]
    check_chains(rows)
    async with db.read() as session:
        replay = (await session.exec(select(Replay))).one()
    assert (replay.done, replay.matched, replay.requeued) == (True, 4, 4)


async def test_sqlite_finds_the_waiters_of_ended_deliveries_by_what_they_wait_for(
    db: Database,
) -> None:
    """The release in every record batch looks the waiters up through ``waiting_for``:
    SQLite keeps no statistics, and picked the status index, scanning every due delivery."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans from statistics")
    sent: list[tuple[str, Any]] = []

    def keep(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", keep)
    try:
        async with db.write() as session:
            await chains.release(await session.connection(), [1, 2], utcnow())
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", keep)
    [(statement, parameters)] = [(s, p) for s, p in sent if s.startswith("UPDATE deliveries")]
    async with db.read() as session:
        conn = await session.connection()
        plan = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        steps = [str(row[-1]) for row in plan]
    assert any("USING INDEX ix_deliveries_waiting_for" in step for step in steps), steps
    assert not any("ix_deliveries_status" in step for step in steps), steps
