"""The delivery queue consumer against real Redis, a real database and a real receiver:
claims, finishing, deferral after a failure, and ids it cannot run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from arq.constants import in_progress_key_prefix
from sqlalchemy import delete as sa_delete
from sqlmodel import col

from relay._exceptions import SubscriptionBusy
from relay.db import Database, utcnow
from relay.db.models import Delivery
from relay.delivery.consumer import DeliveryConsumer
from relay.loops import supervise
from relay.queue import FIRST_ATTEMPTS_QUEUE, Job, RedisQueue
from relay.settings import Settings
from relay.tuning import DeliveryTuning, Timeouts
from tests.support.deliveries import add_deliveries, delivery, run_job
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import add_subscription, wait_for, worker_context, worker_settings
from workers.context import WorkerContext

RETRY_AFTER_ERROR = DeliveryTuning().error_retry
TIMEOUTS = Timeouts(delivery=5, job_margin=0)


@contextlib.asynccontextmanager
async def consuming(settings: Settings, redis_url: str) -> AsyncIterator[WorkerContext]:
    """A worker context with the first-attempts queue consumed until the block exits."""
    async with worker_context(settings, redis_url) as app:
        consumer = _consumer(app)
        stop = asyncio.Event()
        step = functools.partial(consumer.step, stop)
        task = asyncio.create_task(supervise("test", step, stop, restart_delay=1.0))
        try:
            yield app
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await consumer.drain(within=5)


def _consumer(
    app: WorkerContext,
    queue: str = FIRST_ATTEMPTS_QUEUE,
    timeouts: Timeouts = TIMEOUTS,
) -> DeliveryConsumer:
    return DeliveryConsumer(
        app.queue, app.pipeline, queue, max_jobs=20, timeouts=timeouts, tuning=app.tuning.delivery
    )


async def test_jobs_run_once_and_leave_nothing_behind(
    db: Database, settings: Settings, redis_url: str
) -> None:
    receiver = Receiver()
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        ids = await add_deliveries(db, [sub], 3)
        claimed_elsewhere = Job(ids[2], 1).id
        async with consuming(worker_settings(settings, srv.url), redis_url) as app:
            # another worker is running the third one: this worker must leave it alone
            await app.redis.set(in_progress_key_prefix + claimed_elsewhere, b"1", px=60_000)
            await RedisQueue(app.redis).enqueue([Job(i, 1, utcnow()) for i in ids])
            await wait_for(lambda: _received(receiver, 2), 10)
            await asyncio.sleep(0.5)
            assert len(receiver.event_ids()) == 2
            assert (await delivery(db, ids[2]))[0].status == "pending"
            assert await app.redis.zrange(FIRST_ATTEMPTS_QUEUE, 0, -1) == [
                claimed_elsewhere.encode()
            ]
            # that worker died: its claim lapses and this one runs the job
            await app.redis.delete(in_progress_key_prefix + claimed_elsewhere)
            await wait_for(lambda: _received(receiver, 3), 10)
            await wait_for(lambda: _queue_empty(app), 5)
            assert await app.redis.keys(in_progress_key_prefix + "*") == []
    for i in ids:
        row, attempts = await delivery(db, i)
        assert (row.status, len(attempts)) == ("succeeded", 1)
    assert sorted(receiver.event_ids()) == sorted(set(receiver.event_ids()))


async def test_a_failing_job_stays_queued_for_later(
    db: Database, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    """The database is unreachable (a file in a directory that does not exist): the job
    fails, and goes back in the queue RETRY_AFTER_ERROR later instead of being dropped."""
    unreachable = f"sqlite+aiosqlite:///{tmp_path}/missing/relay.db"
    broken = worker_settings(settings, "http://127.0.0.1:9", database_url=unreachable)
    async with consuming(broken, redis_url) as app:
        queued_at = utcnow()
        await RedisQueue(app.redis).enqueue([Job(7, 1, queued_at)])

        async def deferred() -> bool:
            score = await app.redis.zscore(FIRST_ATTEMPTS_QUEUE, Job(7, 1).id)
            return score is not None and score > queued_at.timestamp() * 1000 + 1000

        await wait_for(deferred, 10)
        score = await app.redis.zscore(FIRST_ATTEMPTS_QUEUE, Job(7, 1).id)
        assert score is not None
        delay = score / 1000 - queued_at.timestamp()
        assert RETRY_AFTER_ERROR - 1 < delay < RETRY_AFTER_ERROR + 5, delay
        assert await app.redis.keys(in_progress_key_prefix + "*") == []


async def test_a_foreign_id_is_dropped_not_retried_forever(
    db: Database, settings: Settings, redis_url: str
) -> None:
    async with consuming(worker_settings(settings, "http://127.0.0.1:9"), redis_url) as app:
        await app.redis.zadd(FIRST_ATTEMPTS_QUEUE, {"deliver:not-a-number:1": 0})
        await wait_for(lambda: _queue_empty(app), 5)
        assert await app.redis.keys(in_progress_key_prefix + "*") == []


async def test_a_job_past_its_deadline_is_abandoned_and_stays_queued(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """The watchdog: a job still running ``Timeouts.job`` (1 s here) after it started is
    abandoned and put back RETRY_AFTER_ERROR later, with nothing recorded, so it is sent
    again then. Its receiver holds the request for 3 s, inside the sender's own 5 s: without
    the watchdog the job would end with the receiver's answer, recorded and off the queue."""
    receiver = Receiver(responder=lambda n: (204, {}, 3.0))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        [delivery_id] = await add_deliveries(db, [sub], 1)
        patient = worker_settings(settings, srv.url, delivery_timeout=5)
        async with worker_context(patient, redis_url) as app:
            consumer = _consumer(app, timeouts=Timeouts(delivery=1, job_margin=0))
            await RedisQueue(app.redis).enqueue([Job(delivery_id, 1, utcnow())])
            assert await consumer.step(asyncio.Event()) == 0.0
            assert list(consumer.running) == [Job(delivery_id, 1).id]
            await wait_for(lambda: asyncio.sleep(0, not consumer.running), 5)
            assert RETRY_AFTER_ERROR - 1 < await _due_in(app, delivery_id) <= RETRY_AFTER_ERROR
            assert await app.redis.keys(in_progress_key_prefix + "*") == []
    row, attempts = await delivery(db, delivery_id)
    assert (row.status, row.attempts, attempts) == ("pending", 0, [])
    assert len(receiver.received) == 1


async def test_a_job_that_must_step_aside_again_is_deferred_unread(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """Noisy neighbour (#15): a job that stepped aside (its owner's share full, or its
    subscription's circuit open) is deferred again at its claim while that holds, without a
    database read: its delivery is deleted first, and a read would have found it gone and
    dropped the job. A busy owner's job comes back later each time."""
    receiver = Receiver(responder=lambda n: (204, {}, 1.0))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        busy, tripped = await add_deliveries(db, [sub], 2)
        slow = worker_settings(settings, srv.url, delivery_timeout=0.3)
        async with worker_context(slow, redis_url) as app:
            pipeline = app.pipeline
            pipeline.tuning = replace(pipeline.tuning, owner_in_flight=1)
            assert await pipeline.owners.acquire(sub.owner, 1)  # the owner's one slot
            with pytest.raises(SubscriptionBusy) as first:
                await run_job(app, busy, 1)
            assert first.value.defer <= 0.75
            await _delete_delivery(db, busy)
            await _claim_once(app, Job(busy, 1))
            assert 2 * 0.25 - 0.1 <= await _due_in(app, busy) <= 2 * 0.75 + 0.1  # doubled
            pipeline.owners.release(sub.owner)

            gates = pipeline.gates
            gates.breaker = replace(gates.breaker, after=1, span=0.0, cooldown=30)
            assert await run_job(app, tripped, 1) == "retrying"  # timed out: the circuit opens
            await wait_for(lambda: asyncio.sleep(0, gates.open_for(sub.id) is not None), 5)
            with pytest.raises(SubscriptionBusy):
                await run_job(app, tripped, 2)
            await _delete_delivery(db, tripped)
            await _claim_once(app, Job(tripped, 2))
            assert 25 < await _due_in(app, tripped, attempt=2) <= 33.5
    assert len(receiver.received) == 1


async def _delete_delivery(db: Database, delivery_id: int) -> None:
    async with db.write() as session:
        await session.exec(sa_delete(Delivery).where(col(Delivery.id) == delivery_id))


async def _claim_once(app: WorkerContext, job: Job) -> None:
    """``job`` due now, and one step of its queue's consumer."""
    await app.redis.zadd(job.queue, {job.id: 0}, xx=True)  # due now, if already queued
    await RedisQueue(app.redis).enqueue([Job(job.delivery_id, job.attempt, utcnow())])
    consumer = _consumer(app, job.queue)
    assert await consumer.step(asyncio.Event()) == 0.0
    assert consumer.running == {}  # nothing was started
    assert await app.redis.keys(in_progress_key_prefix + "*") == []


async def _due_in(app: WorkerContext, delivery_id: int, attempt: int = 1) -> float:
    job = Job(delivery_id, attempt)
    score = await app.redis.zscore(job.queue, job.id)
    assert score is not None, "the job left the queue: it was read and found gone"
    return float(score) / 1000 - time.time()


async def _received(receiver: Receiver, count: int) -> bool:
    return len(receiver.event_ids()) >= count


async def _queue_empty(app: WorkerContext) -> bool:
    return int(await app.redis.zcard(FIRST_ATTEMPTS_QUEUE)) == 0
