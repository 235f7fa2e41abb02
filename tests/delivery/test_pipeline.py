"""The deliver job against real receivers: idempotency, Retry-After, redirects, timeouts, and
a hanging endpoint that must not hold up a healthy one."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay._exceptions import SubscriptionBusy
from relay.api.app import create_app
from relay.db import Database, utcnow
from relay.db.models import DeliveryAttempt, DeliveryStatus
from relay.delivery.sender import AttemptOutcome
from relay.queue import Job, RedisQueue, open_redis
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.deliveries import add_deliveries, count_status, delivery, run_job
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import (
    add_subscription,
    running_worker,
    wait_for,
    worker_context,
    worker_settings,
)

MAX_IN_FLIGHT = 8  # a subscription's default max_in_flight


async def test_the_same_job_twice_records_one_attempt(
    db: Database, settings: Settings, redis_url: str
) -> None:
    receiver = Receiver(responder=lambda n: (204, {}, 0.2))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        first, second = await add_deliveries(db, [sub], 2)
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            # concurrently: both pass the "still waiting?" check, the CAS records one
            results = await asyncio.gather(run_job(app, first, 1), run_job(app, first, 1))
            # one after the other: the second finds the delivery moved on
            sequential = [await run_job(app, second, 1), await run_job(app, second, 1)]
    assert sorted(results) == ["succeeded", "succeeded"]
    assert sequential == ["succeeded", "stale"]
    for delivery_id in (first, second):
        row, attempts = await delivery(db, delivery_id)
        assert (row.status, row.attempts, len(attempts)) == ("succeeded", 1, 1)
    ids = receiver.event_ids()
    assert len(ids) == 3
    assert len(set(ids)) == 2


async def _one_attempt(
    db: Database, settings: Settings, redis_url: str, status: int, headers: dict[str, str]
) -> tuple[float, DeliveryAttempt, Receiver]:
    """One attempt against a receiver answering ``status``; seconds until the next one."""
    receiver = Receiver(responder=lambda n: (status, headers, 0.0))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        (delivery_id,) = await add_deliveries(db, [sub], 1)
        async with worker_context(settings, redis_url) as app:
            assert await run_job(app, delivery_id, 1) == "retrying"
    row, attempts = await delivery(db, delivery_id)
    assert row.next_attempt_at is not None
    assert len(attempts) == 1
    return (row.next_attempt_at - attempts[0].attempted_at).total_seconds(), attempts[0], receiver


async def test_retry_after_is_honoured_but_never_shortens(
    db: Database, settings: Settings, redis_url: str
) -> None:
    longer = worker_settings(settings, "http://127.0.0.1:9", retry_schedule="1,60")
    delay, attempt, _ = await _one_attempt(db, longer, redis_url, 503, {"Retry-After": "20"})
    assert 19 <= delay <= 22
    assert attempt.status_code == 503
    delay, _, _ = await _one_attempt(db, longer, redis_url, 429, {"Retry-After": "30"})
    assert 29 <= delay <= 32

    shorter = worker_settings(settings, "http://127.0.0.1:9", retry_schedule="10,60")
    delay, _, _ = await _one_attempt(db, shorter, redis_url, 429, {"Retry-After": "0"})
    assert delay >= 8  # the schedule's 10 s - 20 % jitter, not 0


async def test_a_redirect_is_a_failure_and_is_not_followed(
    db: Database, settings: Settings, redis_url: str
) -> None:
    fast = worker_settings(settings, "http://127.0.0.1:9")
    _, attempt, receiver = await _one_attempt(db, fast, redis_url, 307, {"Location": "/elsewhere"})
    assert attempt.status_code == 307
    assert (attempt.error or "").startswith("redirect")
    with receiver.lock:
        assert [r.path for r in receiver.received] == ["/hook"]


async def test_a_hanging_receiver_times_out_and_is_retried(
    db: Database, settings: Settings, redis_url: str
) -> None:
    receiver = Receiver(responder=lambda n: (204, {}, 4.0 if n == 0 else 0.0))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        (delivery_id,) = await add_deliveries(db, [sub], 1)
        options = worker_settings(settings, srv.url, delivery_timeout=1.0)
        async with running_worker(options, redis_url):
            await RedisQueue(await open_redis(redis_url)).enqueue([Job(delivery_id, 1, utcnow())])
            await wait_for(lambda: _status_is(db, delivery_id, "succeeded"), 30)
    row, attempts = await delivery(db, delivery_id)
    assert (row.status, row.attempts) == ("succeeded", 2)
    assert (attempts[0].error or "").startswith("timeout")
    assert attempts[0].status_code is None
    assert attempts[1].status_code == 204
    assert attempts[0].duration_ms < 3000  # cut at the 1 s timeout, not the receiver's 4 s


async def _status_is(db: Database, delivery_id: int, status: str) -> bool:
    row, _ = await delivery(db, delivery_id)
    return row.status == status


class HangingReceiver:
    """Holds every request for ``delay`` seconds; records the peak of concurrent requests."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.total = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            with self.lock:
                self.current += 1
                self.total += 1
                self.peak = max(self.peak, self.current)
            try:
                await asyncio.sleep(self.delay)
            finally:
                with self.lock:
                    self.current -= 1
            return Response(status_code=204)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


async def test_a_slow_endpoint_does_not_stop_a_healthy_one(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """The slow endpoint answers within the timeout, so every request it holds is one the
    worker is waiting for: its peak concurrency is the worker's per-subscription bound."""
    events = 150
    healthy, hanging = Receiver(), HangingReceiver(delay=1.0)
    with serve(healthy.app()) as ok_srv, serve(hanging.app()) as slow_srv:
        slow = await add_subscription(db, slow_srv.url + "/slow")
        fine = await add_subscription(db, ok_srv.url + "/fine")
        ids = await add_deliveries(db, [slow, fine], events)
        options = worker_settings(settings, ok_srv.url, delivery_timeout=2.0, retry_schedule="30")
        async with running_worker(options, redis_url):
            pool = await open_redis(redis_url)
            # the hanging endpoint's jobs first in the queue, ahead of every healthy one
            await RedisQueue(pool).enqueue([Job(i, 1, utcnow()) for i in ids])
            await pool.aclose()
            await wait_for(lambda: _count_is(db, "succeeded", fine.id, events), 40)
            slow_done = await count_status(db, "succeeded", slow.id)
    assert len(set(healthy.event_ids())) == events
    # the slow endpoint never held more than its share of the worker's slots, and it had not
    # had every event yet when the healthy endpoint had them all
    assert 1 <= hanging.peak <= MAX_IN_FLIGHT
    assert slow_done < events


async def _count_is(db: Database, status: str, subscription_id: str, n: int) -> bool:
    return await count_status(db, status, subscription_id) >= n


def _replying(status: int, body: bytes) -> Starlette:
    async def hook(request: Request) -> Response:
        return Response(body, status_code=status, media_type="application/octet-stream")

    return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b"200 ok\x00", "succeeded"),
        (500, b"\x1f\x8b\x08\x00binary\x00\xff", "retrying"),  # a gzip-like reply
    ],
)
async def test_a_reply_the_database_cannot_hold_is_recorded_once(
    db: Database, settings: Settings, redis_url: str, status: int, body: bytes, expected: str
) -> None:
    """PostgreSQL refuses NUL in text: the attempt was once never recorded, so the job ran
    again every few seconds, forever. Now the reply is stored as the database can hold it."""
    with serve(_replying(status, body)) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        (delivery_id,) = await add_deliveries(db, [sub], 1)
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            assert await run_job(app, delivery_id, 1) == expected
            assert await run_job(app, delivery_id, 1) == "stale"  # recorded: not sent again
    row, attempts = await delivery(db, delivery_id)
    assert (row.status, row.attempts, len(attempts)) == (expected, 1, 1)
    assert "\x00" not in attempts[0].response_excerpt
    assert attempts[0].response_excerpt.startswith(body[:2].decode(errors="replace"))


async def test_an_attempt_the_database_refuses_is_recorded_without_the_reply(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """Whatever else a database may refuse in a reply (here NUL, past the sender's clean-up,
    on PostgreSQL): the attempt is recorded without it, and says so; an attempt recorded in
    the same batch keeps its reply."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores NUL in text: nothing it refuses to provoke this with")
    sub = await add_subscription(db, "http://127.0.0.1:9/hook")
    refused, fine = await add_deliveries(db, [sub], 2)
    async with worker_context(worker_settings(settings, "http://127.0.0.1:9"), redis_url) as app:
        first, second = await app.pipeline.load([Job(refused, 1), Job(fine, 1)])
        assert first is not None
        assert second is not None
        bad = AttemptOutcome(status_code=200, duration_ms=3, response_excerpt="ok\x00")
        good = AttemptOutcome(status_code=200, duration_ms=3, response_excerpt="fine")
        recorded = [app.pipeline.record(first, bad), app.pipeline.record(second, good)]
        assert await asyncio.gather(*recorded) == [DeliveryStatus.SUCCEEDED] * 2
    row, attempts = await delivery(db, refused)
    assert (row.status, row.attempts, len(attempts)) == ("succeeded", 1, 1)
    assert "not stored: the database refused it" in attempts[0].response_excerpt
    row, attempts = await delivery(db, fine)
    assert (row.status, [a.response_excerpt for a in attempts]) == ("succeeded", ["fine"])


async def test_a_delivery_cancelled_while_in_flight_stays_cancelled(
    db: Database, settings: Settings, runtime: RuntimeSecrets, redis_url: str
) -> None:
    """The subscription is deleted (through the API) while its receiver holds the request:
    the attempt is logged, and the delivery stays cancelled, as the DELETE left it."""
    receiver = Receiver(responder=lambda n: (204, {}, 1.0))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with serve(receiver.app()) as srv, serve(create_app(settings, runtime)) as api:
        sub = await add_subscription(db, srv.url + "/hook")
        (delivery_id,) = await add_deliveries(db, [sub], 1)
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            job = asyncio.create_task(run_job(app, delivery_id, 1))
            await wait_for(lambda: asyncio.sleep(0, bool(receiver.received)), 10, 0.01)
            deleted = await asyncio.to_thread(
                httpx.delete, f"{api.url}/v1/subscriptions/{sub.id}", headers=admin
            )
            assert deleted.status_code == 204
            assert await job == "cancelled"
    row, attempts = await delivery(db, delivery_id)
    assert (row.status, row.attempts, len(attempts)) == ("cancelled", 1, 1)
    assert attempts[0].status_code == 204


async def test_no_attempt_starts_once_delete_returned(
    db: Database, settings: Settings, runtime: RuntimeSecrets, redis_url: str
) -> None:
    """DELETE waits for the attempt in flight, and an attempt loaded before the DELETE but
    sent after it returned is turned away at the subscription's gate (#15: six requests
    arrived up to 135 ms after their DELETE had returned)."""
    received: list[float] = []
    answered: list[float] = []

    async def hook(request: Request) -> Response:
        received.append(time.monotonic())
        await asyncio.sleep(1.0)
        answered.append(time.monotonic())
        return Response(status_code=204)

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    api_app = create_app(settings, runtime, redis_url=redis_url)
    with serve(receiver) as srv, serve(api_app) as api:
        sub = await add_subscription(db, srv.url + "/hook")
        first, second = await add_deliveries(db, [sub], 2)
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            in_flight = asyncio.create_task(run_job(app, first, 1))
            await wait_for(lambda: asyncio.sleep(0, bool(received)), 10, 0.01)
            (late,) = await app.pipeline.load([Job(second, 1)])  # loaded before the DELETE
            deleted = await asyncio.to_thread(
                httpx.delete, f"{api.url}/v1/subscriptions/{sub.id}", headers=admin
            )
            returned = time.monotonic()
            assert deleted.status_code == 204
            assert answered, "DELETE returned while an attempt was still in flight"
            assert answered[0] <= returned
            assert await app.pipeline.run(late) == "closed"
            assert await in_flight == "cancelled"
    assert len(received) == 1
    for delivery_id in (first, second):
        row, _ = await delivery(db, delivery_id)
        assert row.status == "cancelled"


async def test_one_owners_hanging_endpoints_leave_the_worker_to_others(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """Noisy neighbour (#15): an owner holds at most ``owner_in_flight`` of a worker's jobs;
    beyond it its jobs step aside, while another owner's go out at once."""
    hanging = Receiver(responder=lambda n: (204, {}, 1.5))
    healthy = Receiver()
    with serve(hanging.app()) as slow, serve(healthy.app()) as fast:
        noisy = [await add_subscription(db, f"{slow.url}/{i}") for i in range(3)]
        calm = await add_subscription(db, fast.url + "/hook", owner="calm")
        stuck = [d for sub in noisy for d in await add_deliveries(db, [sub], 1)]
        (other,) = await add_deliveries(db, [calm], 1)
        async with worker_context(worker_settings(settings, slow.url), redis_url) as app:
            app.pipeline.tuning = replace(app.pipeline.tuning, owner_in_flight=2)
            held = [asyncio.create_task(run_job(app, d, 1)) for d in stuck[:2]]
            await wait_for(lambda: asyncio.sleep(0, len(hanging.received) == 2), 10, 0.01)
            with pytest.raises(SubscriptionBusy):
                await run_job(app, stuck[2], 1)  # its owner's share is taken
            assert await run_job(app, other, 1) == "succeeded"
            assert await asyncio.gather(*held) == ["succeeded", "succeeded"]
    assert len(healthy.received) == 1


async def test_jobs_waiting_for_a_subscription_slot_do_not_count_against_the_owner(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """The owner's share counts attempts being sent: jobs queued behind their subscription's
    one slot (each waits at most ``slot_wait``) leave the share to the owner's other
    subscriptions, where counting them turned a backlog into jobs sent back and claimed
    again and again."""
    slow = Receiver(responder=lambda n: (204, {}, 0.5))
    quick = Receiver()
    with serve(slow.app()) as slow_srv, serve(quick.app()) as quick_srv:
        narrow = await add_subscription(db, slow_srv.url + "/hook", max_in_flight=1)
        other = await add_subscription(db, quick_srv.url + "/hook")
        queued = await add_deliveries(db, [narrow], 3)
        (elsewhere,) = await add_deliveries(db, [other], 1)
        async with worker_context(worker_settings(settings, slow_srv.url), redis_url) as app:
            app.pipeline.tuning = replace(app.pipeline.tuning, owner_in_flight=2)
            app.pipeline.slots.wait = 5.0
            held = [asyncio.create_task(run_job(app, d, 1)) for d in queued]
            await wait_for(lambda: asyncio.sleep(0, len(slow.received) == 1), 10, 0.01)
            # one attempt out, two jobs waiting for its slot: the owner has room for one more
            assert await run_job(app, elsewhere, 1) == "succeeded"
            assert await asyncio.gather(*held) == ["succeeded"] * 3
    assert len(quick.received) == 1


async def test_an_endpoint_that_keeps_timing_out_has_its_circuit_opened(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """Noisy neighbour (#15): after ``circuit_after`` timeouts in a row the subscription's jobs
    step aside for the cooldown, spending no attempt; then a probe is sent, and an answer
    closes the circuit (``relay.queue.gates``)."""
    hanging = {"on": True}
    receiver = Receiver(responder=lambda n: (204, {}, 3.0 if hanging["on"] else 0.0))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        deliveries = await add_deliveries(db, [sub], 4)
        settings_ = worker_settings(settings, srv.url, delivery_timeout=0.3)
        async with worker_context(settings_, redis_url) as app:
            gates = app.pipeline.gates
            gates.breaker = replace(gates.breaker, after=2, span=0.1, cooldown=0.5, probes=1)
            timed_out = [await run_job(app, d, 1) for d in deliveries[:2]]
            with pytest.raises(SubscriptionBusy) as stepped_aside:
                await run_job(app, deliveries[2], 1)
            assert 0 < stepped_aside.value.defer <= 0.55
            assert len(receiver.received) == 2  # the third was not sent
            await asyncio.sleep(0.6)
            hanging["on"] = False
            probe = await run_job(app, deliveries[2], 1)
            after = await run_job(app, deliveries[3], 1)
    assert timed_out == ["retrying", "retrying"]
    assert (probe, after) == ("succeeded", "succeeded")
    row, attempts = await delivery(db, deliveries[2])
    assert (row.attempts, len(attempts)) == (1, 1)  # stepping aside spent no attempt


async def test_a_throttled_subscriptions_jobs_come_back_in_line(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """Past its max_per_second, each job turned away is given the next place in the
    subscription's line, 1/max_per_second after the one before: a backlog comes back about
    as fast as it can go, not all within the second (20,000 claims and reads a second for a
    subscription at 20/s, bench/limits.py)."""
    receiver = Receiver()
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook", max_per_second=2)
        ids = await add_deliveries(db, [sub], 8)
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            began = time.monotonic()
            defers: list[float] = []
            for delivery_id in ids:
                try:
                    assert await run_job(app, delivery_id, 1) == "succeeded"
                except SubscriptionBusy as busy:
                    defers.append(busy.defer)
            took = time.monotonic() - began
    assert len(receiver.received) + len(defers) == 8
    assert len(defers) >= 4, defers  # at most two a second went out
    assert defers == sorted(defers), defers  # each one further back
    assert defers[-1] >= 0.5 * len(defers) - took, (defers, took)
