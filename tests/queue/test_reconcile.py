"""Redis is only a dispatch buffer: flushed or restarted (a private ``redis-server`` of this
test's own, never the shared one) mid-run, every delivery still arrives, with duplicates only
for attempts in flight, and the workers carry on without a restart."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select, update

from relay.clever.simulator import Simulator
from relay.db import Database, utcnow
from relay.db.models import Delivery, Subscription
from relay.queue import FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE, Job, RedisQueue, open_redis
from relay.queue.reconcile import Reconciler
from relay.queue.redis_queue import WATERMARK_KEY
from relay.settings import Settings
from relay.tuning import ReconcileTuning
from tests.support.cluster import cluster, duplicates, statuses
from tests.support.deliveries import add_deliveries
from tests.support.events import sim_events
from tests.support.receiver import Receiver
from tests.support.redis_server import REDIS_SERVER, PrivateRedis
from tests.support.servers import ServerThread, serve
from tests.support.worker import add_subscription, wait_for

FULL_SCAN_EVERY = ReconcileTuning().full_scan_every
MAX_IN_FLIGHT = 8  # a subscription's default max_in_flight

needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server on PATH")


async def test_requeue_due_queues_only_what_redis_lost(db: Database, redis_url: str) -> None:
    sub = await add_subscription(db, "http://127.0.0.1:9/hook")
    ids = await add_deliveries(db, [sub], 3)
    async with db.write() as session:  # one retry due, one done
        rows = {d.id: d for d in (await session.exec(select(Delivery))).all()}
        rows[ids[1]].status, rows[ids[1]].attempts = "retrying", 2
        rows[ids[2]].status, rows[ids[2]].next_attempt_at = "succeeded", None
        for row in rows.values():
            session.add(row)
    pool = await open_redis(redis_url)
    reconciler = Reconciler(db, RedisQueue(pool))
    later = utcnow() + timedelta(seconds=5)  # past the reconciler's grace period
    assert await reconciler.requeue_due(now=later) == 2
    assert await reconciler.requeue_due(now=later) == 0  # already queued: left alone
    assert await pool.zscore(FIRST_ATTEMPTS_QUEUE, Job(ids[0], 1).id) is not None
    assert await pool.zscore(RETRIES_QUEUE, Job(ids[1], 3).id) is not None
    await pool.flushdb()  # Redis lost everything: both come back
    assert await reconciler.requeue_due(now=later) == 2
    await pool.aclose()


async def test_a_pass_reads_what_became_due_since_the_last_one_and_everything_after_a_loss(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """The watermark: with Redis intact, a pass reads only deliveries that became due since
    the previous pass (an old one missing from Redis is not looked for); once Redis lost its
    data, or FULL_SCAN_EVERY after the last full pass, a pass reads them all."""
    sub = await add_subscription(db, "http://127.0.0.1:9/hook")
    old, recent = await add_deliveries(db, [sub], 2)
    t0 = utcnow()
    await _set_due(db, old, t0 - timedelta(hours=1))
    await _set_due(db, recent, t0 - timedelta(hours=2))  # not due yet "since"; moved below
    pool = await open_redis(redis_url)
    reconciler = Reconciler(db, RedisQueue(pool))
    try:
        assert await reconciler.run_pass(now=t0) == 2  # no watermark: a full pass
        await pool.zrem(FIRST_ATTEMPTS_QUEUE, Job(old, 1).id, Job(recent, 1).id)
        # the queue lost both without Redis losing its data (which cannot happen, but shows
        # what a pass looks at): only the one that became due after the last pass comes back
        await _set_due(db, recent, t0 + timedelta(seconds=5))
        assert await reconciler.run_pass(now=t0 + timedelta(seconds=10)) == 1
        assert await pool.zscore(FIRST_ATTEMPTS_QUEUE, Job(recent, 1).id) is not None
        assert await pool.zscore(FIRST_ATTEMPTS_QUEUE, Job(old, 1).id) is None
        # the backstop: a full pass once FULL_SCAN_EVERY has passed since the last one
        later = t0 + timedelta(seconds=FULL_SCAN_EVERY + 1)
        assert await reconciler.run_pass(now=later) == 1
        assert await pool.zscore(FIRST_ATTEMPTS_QUEUE, Job(old, 1).id) is not None
        # Redis lost everything, the watermark with it: the next pass is a full one
        await pool.flushdb()
        assert await reconciler.run_pass(now=later + timedelta(seconds=10)) == 2
        assert await pool.get(WATERMARK_KEY) is not None
    finally:
        await pool.aclose()


async def _set_due(db: Database, delivery_id: int, at: datetime) -> None:
    async with db.write() as session:
        await session.exec(
            update(Delivery).where(col(Delivery.id) == delivery_id).values(next_attempt_at=at)
        )


async def test_parked_deliveries_wake_when_the_subscription_is_enabled(
    db: Database, redis_url: str
) -> None:
    sub = await add_subscription(db, "http://127.0.0.1:9/hook", enabled=False)
    ids = await add_deliveries(db, [sub], 2)
    async with db.write() as session:
        for row in (await session.exec(select(Delivery))).all():
            row.next_attempt_at = None  # parked by the deliver job
            session.add(row)
    pool = await open_redis(redis_url)
    unpark = Reconciler(db, RedisQueue(pool)).unpark
    assert await unpark() == []  # still disabled
    async with db.write() as session:
        stored = await session.get(Subscription, sub.id)
        assert stored is not None
        stored.enabled = True
        session.add(stored)
    assert sorted(d.delivery_id for d in await unpark()) == sorted(ids)
    await pool.aclose()
    async with db.read() as session:
        due = (
            await session.exec(
                select(Delivery.id).where(col(Delivery.next_attempt_at).is_not(None))
            )
        ).all()
    assert sorted(i for i in due if i is not None) == sorted(ids)


async def _run_with_disruption(
    db: Database,
    settings: Settings,
    private_redis: PrivateRedis,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
    disrupt: str,
) -> tuple[int, int, int]:
    """Deliver a 200-event backlog; ``disrupt`` Redis after 40 arrive. Returns (received
    requests, duplicates, received when disrupted)."""
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 200)
    expected_ids = {e["id"] for e in sim_events(sim, district.id)}
    slow = Receiver(responder=lambda n: (204, {}, 0.2))
    with (
        serve(slow.app()) as srv,
        cluster(settings, private_redis.url, sim_server.url, tmp_path) as relay,
    ):
        relay.subscribe(srv.url + "/slow")
        relay.add_district(district.id, district.token)

        async def some_received() -> bool:
            return len(slow.event_ids()) >= 40

        await wait_for(some_received, 30)
        at = len(slow.event_ids())
        if disrupt == "flush":
            private_redis.flushall()
        else:
            private_redis.stop()
            await asyncio.sleep(2)
            private_redis.start()
        await relay.settled(db, len(expected_ids), 45, len(slow.event_ids()))
        await asyncio.sleep(0.5)
        # the workers rode it out: the same processes, still running
        assert all(w.proc.poll() is None for w in relay.workers)
        logs = "".join(w.output() for w in relay.workers)
        assert "re-queued deliveries missing from Redis" in logs  # the reconciler did it

    assert set(slow.event_ids()) == expected_ids
    assert await statuses(db) == {"succeeded": len(expected_ids)}
    return len(slow.event_ids()), duplicates(slow), at


@needs_redis_server
async def test_a_redis_flush_mid_run_loses_nothing(
    db: Database,
    settings: Settings,
    private_redis: PrivateRedis,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    received, dupes, at = await _run_with_disruption(
        db, settings, private_redis, simulator, tmp_path, "flush"
    )
    # only attempts sent and not yet recorded at the flush can arrive twice: per worker (two
    # here) up to MAX_IN_FLIGHT in flight and at most one more wave answered
    # and waiting for its write transaction (see test_a_worker_killed_mid_run_loses_nothing)
    assert dupes <= 2 * 2 * MAX_IN_FLIGHT, (received, dupes)
    print(f"flush after {at} received: {received} requests, {dupes} duplicates")


@needs_redis_server
async def test_a_redis_restart_mid_run_needs_no_worker_restart(
    db: Database,
    settings: Settings,
    private_redis: PrivateRedis,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    received, dupes, at = await _run_with_disruption(
        db, settings, private_redis, simulator, tmp_path, "restart"
    )
    assert dupes <= 16, (received, dupes)
    print(f"restart after {at} received: {received} requests, {dupes} duplicates")
