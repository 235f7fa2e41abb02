"""Per-subscription gates shared by every worker (``relay.queue.gates``), on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis, create_pool

from relay.queue import redis_settings
from relay.queue.gates import Gates, Pass, Request


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(redis_settings(redis_url))
    yield pool
    await pool.aclose()


def _asks(n: int, *, limit: int = 100, rate: int | None = None) -> list[Request]:
    return [Request("sub_a", f"job{i}", limit, rate) for i in range(n)]


async def test_max_in_flight_is_shared_by_the_workers(redis: ArqRedis) -> None:
    one, two = Gates(redis, lease=30), Gates(redis, lease=30)  # two workers
    asks = _asks(5, limit=3)
    verdicts = [await (one if i % 2 else two).enter(r) for i, r in enumerate(asks)]
    assert verdicts == [Pass.GRANTED] * 3 + [Pass.BUSY] * 2
    await one.leave(asks[0])
    assert await two.enter(asks[3]) is Pass.GRANTED
    assert await one.enter(Request("sub_b", "other", 3, None)) is Pass.GRANTED  # its own


async def test_max_per_second_counts_starts_in_redis_time(redis: ArqRedis) -> None:
    gates = Gates(redis, lease=30)
    verdicts = await gates._enter(_asks(12, rate=5))  # one script call: one second of Redis
    assert verdicts.count(Pass.GRANTED) == 5
    assert verdicts.count(Pass.THROTTLED) == 7


async def test_a_closed_gate_turns_attempts_away_and_waits_for_those_past_it(
    redis: ArqRedis,
) -> None:
    gates = Gates(redis, lease=30)
    inside = Request("sub_a", "job0", 8, None)
    assert await gates.enter(inside) is Pass.GRANTED
    await gates.close("sub_a")
    assert await gates.enter(Request("sub_a", "job1", 8, None)) is Pass.CLOSED
    assert not await gates.wait_until_idle("sub_a", within=0.1)  # job0 is still sending
    waiting = asyncio.create_task(gates.wait_until_idle("sub_a", within=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await gates.leave(inside)
    assert await waiting
    await gates.open("sub_a")
    assert await gates.enter(Request("sub_a", "job2", 8, None)) is Pass.GRANTED


async def test_a_killed_workers_holds_lapse_and_nothing_is_left_behind(
    redis: ArqRedis,
) -> None:
    gates = Gates(redis, lease=0.2)
    assert await gates.enter(Request("sub_a", "job0", 1, 10)) is Pass.GRANTED  # never left
    assert await gates.enter(Request("sub_a", "job1", 1, 10)) is Pass.BUSY
    await asyncio.sleep(0.3)
    assert await gates.enter(Request("sub_a", "job1", 1, 10)) is Pass.GRANTED
    await gates.leave(Request("sub_a", "job1", 1, 10))
    await asyncio.sleep(2.1)  # the per-second counters expire too
    assert await redis.keys("relay:gate:*") == []
