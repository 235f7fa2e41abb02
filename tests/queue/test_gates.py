"""Per-subscription gates shared by every worker (``relay.queue.gates``), on real Redis:
in-flight and per-second limits, closing, and the circuit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from relay.queue import open_redis
from relay.queue.gates import Breaker, Gates, Pass, Request


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await open_redis(redis_url)
    yield pool
    await pool.aclose()


async def kind(gates: Gates, request: Request) -> Pass:
    return (await gates.enter(request)).kind


def _asks(n: int, *, limit: int = 100, rate: int | None = None) -> list[Request]:
    return [Request("sub_a", f"job{i}", limit, rate) for i in range(n)]


async def test_max_in_flight_is_shared_by_the_workers(redis: ArqRedis) -> None:
    one, two = Gates(redis, lease=30), Gates(redis, lease=30)  # two workers
    asks = _asks(5, limit=3)
    verdicts = [await kind((one if i % 2 else two), r) for i, r in enumerate(asks)]
    assert verdicts == [Pass.GRANTED] * 3 + [Pass.BUSY] * 2
    await one.leave(asks[0])
    assert await kind(two, asks[3]) is Pass.GRANTED
    assert await kind(one, Request("sub_b", "other", 3, None)) is Pass.GRANTED  # its own


async def test_max_per_second_counts_starts_in_redis_time(redis: ArqRedis) -> None:
    gates = Gates(redis, lease=30)
    verdicts = [
        v.kind for v in await gates._call([(r, True, None) for r in _asks(12, rate=5)])
    ]  # one script call: one second of Redis
    assert verdicts.count(Pass.GRANTED) == 5
    assert verdicts.count(Pass.THROTTLED) == 7


async def test_a_closed_gate_turns_attempts_away_and_waits_for_those_past_it(
    redis: ArqRedis,
) -> None:
    gates = Gates(redis, lease=30)
    inside = Request("sub_a", "job0", 8, None)
    assert await kind(gates, inside) is Pass.GRANTED
    await gates.close("sub_a")
    assert await kind(gates, Request("sub_a", "job1", 8, None)) is Pass.CLOSED
    assert not await gates.wait_until_idle("sub_a", within=0.1)  # job0 is still sending
    waiting = asyncio.create_task(gates.wait_until_idle("sub_a", within=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await gates.leave(inside)
    assert await waiting
    await gates.open("sub_a")
    assert await kind(gates, Request("sub_a", "job2", 8, None)) is Pass.GRANTED


async def test_a_killed_workers_holds_lapse_and_nothing_is_left_behind(
    redis: ArqRedis,
) -> None:
    gates = Gates(redis, lease=0.2)
    assert await kind(gates, Request("sub_a", "job0", 1, 10)) is Pass.GRANTED  # never left
    assert await kind(gates, Request("sub_a", "job1", 1, 10)) is Pass.BUSY
    await asyncio.sleep(0.3)
    assert await kind(gates, Request("sub_a", "job1", 1, 10)) is Pass.GRANTED
    await gates.leave(Request("sub_a", "job1", 1, 10))
    await asyncio.sleep(2.1)  # the per-second counters expire too
    assert await redis.keys("relay:gate:*") == []


# The circuit: what every worker heard of a subscription's endpoint

TIMEOUT, ANSWER = False, True


def _breaker(**kw: float) -> Breaker:
    return Breaker(**({"after": 3, "span": 0.2, "cooldown": 5, "longest": 60, "probes": 2} | kw))


async def _attempt(gates: Gates, name: str, heard: bool, sub: str = "sub_a") -> Pass:
    """One attempt through the gate that ends as ``heard`` says (if it was let through)."""
    request = Request(sub, name, 100, None)
    verdict = await kind(gates, request)
    if verdict is Pass.GRANTED:
        await gates.leave(request, heard)
    return verdict


async def test_timeouts_together_are_one_stall_not_a_dead_endpoint(redis: ArqRedis) -> None:
    gates = Gates(redis, lease=30, breaker=_breaker())
    out = [Request("sub_a", f"job{i}", 100, None) for i in range(40)]  # all out at once
    assert {await kind(gates, r) for r in out} == {Pass.GRANTED}
    for r in out:  # all timing out at once
        await gates.leave(r, TIMEOUT)
    assert await kind(gates, Request("sub_a", "next", 100, None)) is Pass.GRANTED


async def test_timeouts_in_any_worker_open_it_and_an_answer_in_another_closes_it(
    redis: ArqRedis,
) -> None:
    one, two = (
        Gates(redis, lease=30, breaker=_breaker()),
        Gates(redis, lease=30, breaker=_breaker()),
    )
    for i, worker in enumerate((one, two, one)):  # three timeouts over the span, two workers
        assert await _attempt(worker, f"job{i}", TIMEOUT) is Pass.GRANTED
        await asyncio.sleep(0.11)
    # the worker whose timeout opened it knows at once, before it asks the gate again
    assert 4 < (one.open_for("sub_a") or 0) <= 5
    assert two.open_for("sub_a") is None
    verdict = await two.enter(Request("sub_a", "job3", 100, None))
    assert verdict.kind is Pass.OPEN
    assert 4 < verdict.wait <= 5
    assert 4 < (two.open_for("sub_a") or 0) <= 5
    assert await _attempt(two, "other", ANSWER, sub="sub_b") is Pass.GRANTED  # its own circuit
    # an attempt of the first worker that was out all along comes back answered: reachable
    assert await kind(one, Request("sub_a", "early", 100, None)) is Pass.OPEN
    await one.leave(Request("sub_a", "late", 100, None), ANSWER)
    assert await kind(two, Request("sub_a", "job4", 100, None)) is Pass.GRANTED


async def test_an_answer_heard_by_another_worker_breaks_the_run_of_timeouts(
    redis: ArqRedis,
) -> None:
    """An endpoint that hangs on every first attempt and answers its retries is alive: the
    worker that sent the retries heard it, even if the other only saw timeouts."""
    one, two = (
        Gates(redis, lease=30, breaker=_breaker()),
        Gates(redis, lease=30, breaker=_breaker()),
    )
    for i, (worker, heard) in enumerate(
        ((one, TIMEOUT), (two, ANSWER), (one, TIMEOUT), (one, TIMEOUT), (two, ANSWER))
    ):
        assert await _attempt(worker, f"job{i}", heard) is Pass.GRANTED
        await asyncio.sleep(0.11)
    assert await _attempt(one, "job5", TIMEOUT) is Pass.GRANTED


async def test_probes_go_when_the_cooldown_ends_and_only_a_probe_reopens_it_for_longer(
    redis: ArqRedis,
) -> None:
    gates = Gates(redis, lease=30, breaker=_breaker(after=2, span=0, cooldown=0.2, probes=2))
    stuck = Request("sub_a", "stuck", 100, None)  # out before the circuit opened
    assert await kind(gates, stuck) is Pass.GRANTED
    for i in range(2):
        await _attempt(gates, f"job{i}", TIMEOUT)
    assert await kind(gates, Request("sub_a", "job2", 100, None)) is Pass.OPEN
    await gates.leave(stuck, TIMEOUT)  # began before it opened: no longer
    await asyncio.sleep(0.25)
    probes = [Request("sub_a", f"probe{i}", 100, None) for i in range(3)]
    assert [await kind(gates, p) for p in probes] == [Pass.GRANTED, Pass.GRANTED, Pass.OPEN]
    # the rest stay away as long again, and at least until the probes can have timed out
    # (a delivery timeout, half the span, and a second): so a round never begins before the
    # last one's probes are answered, which would keep it from ever growing longer
    verdict = await gates.enter(Request("sub_a", "job3", 100, None))
    assert (verdict.kind, 0.95 < verdict.wait <= 1.0) == (Pass.OPEN, True)
    await gates.leave(probes[0], TIMEOUT)  # a probe timed out: open for twice as long
    verdict = await gates.enter(Request("sub_a", "job4", 100, None))
    assert (verdict.kind, 0.35 < verdict.wait <= 0.4) == (Pass.OPEN, True)
    await gates.leave(probes[1], TIMEOUT)  # the other probe began before that: no longer
    verdict = await gates.enter(Request("sub_a", "job5", 100, None))
    assert (verdict.kind, 0.35 < verdict.wait <= 0.4) == (Pass.OPEN, True)
    await asyncio.sleep(0.45)
    assert await _attempt(gates, "probe3", ANSWER) is Pass.GRANTED  # answered: closed
    assert [await kind(gates, Request("sub_a", f"job{i}", 100, None)) for i in range(6, 9)] == [
        Pass.GRANTED
    ] * 3


async def test_a_release_and_a_pass_asked_together_share_one_call_release_first(
    redis: ArqRedis,
) -> None:
    """The pipeline does not wait for its release: the next attempt's pass, asked right
    after, goes in the same script call and may take the place just freed."""
    gates = Gates(redis, lease=30)
    first, second = Request("sub_a", "job0", 1, None), Request("sub_a", "job1", 1, None)
    assert await kind(gates, first) is Pass.GRANTED
    calls = 0
    script = gates._gate_script

    async def counted(**kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await script(**kwargs)

    gates._gate_script = counted  # type: ignore[assignment]
    released = gates.leave(first, True)
    assert await kind(gates, second) is Pass.GRANTED
    assert released.done()
    assert calls == 1
