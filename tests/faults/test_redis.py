"""Redis restarted (no persistence: every queued job gone) or flushed mid-run, on a private
``redis-server``: the database is the source of truth, the reconciler re-queues what Redis
lost, and the same worker processes carry on without a restart."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.redis_server import PrivateRedis
from tests.support.scenario import Answer, ScenarioFactory


def slow(k: int) -> Answer:
    return 204, {}, 0.1


def flaky(k: int) -> Answer:
    return (500 if k == 0 else 204), {}, 0.0  # a retry waits in Redis when it is lost


@pytest.mark.parametrize("disruption", ["restart", "flush"])
async def test_redis_lost_mid_run_loses_nothing(
    make_scenario: ScenarioFactory, private_redis: PrivateRedis, disruption: str
) -> None:
    with make_scenario(
        seed=11,
        redis_url=private_redis.url,
        env={"RELAY_CLEVER_PAGE_SIZE": "50", "RELAY_RETRY_SCHEDULE": "1,1,2"},
    ) as run:
        await run.add_districts(backlog=200)
        await run.hook("slow", answer=slow)
        await run.hook("flaky", answer=flaky, record_types=["users"])
        run.set_event_rate(10)
        run.start_workers(2)
        await run.wait("deliveries under way", lambda: run.received_at_least(40), 30)
        if disruption == "flush":
            private_redis.flushall()
        else:
            private_redis.stop()
            await asyncio.sleep(2)  # events keep arriving and being stored meanwhile
            private_redis.start()
        await run.settle(timeout=60)
        assert len(run.running()) == 2, "the workers rode it out: " + run.logs_tail()
        await run.check()
