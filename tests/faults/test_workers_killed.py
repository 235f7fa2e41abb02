"""Workers SIGKILLed at random moments (seeded) and restarted, several times, while Clever
keeps producing events and a slow receiver keeps deliveries in flight: nothing is lost, the
cursor skips nothing, and no delivery is left behind."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.scenario import Answer, ScenarioFactory

KILLS = 4


def slow(k: int) -> Answer:
    return 204, {}, 0.05  # keeps a few attempts in flight at any moment


@pytest.mark.parametrize("seed", [1])
async def test_workers_sigkilled_at_random_moments_lose_nothing(
    make_scenario: ScenarioFactory, seed: int
) -> None:
    with make_scenario(
        seed=seed,
        districts=2,
        env={"RELAY_CLEVER_PAGE_SIZE": "50"},
    ) as run:
        await run.add_districts(backlog=150)
        await run.hook("all", answer=slow)
        await run.hook("sections", answer=slow, record_types=["sections", "users"])
        run.set_event_rate(10)  # per district, while workers die
        run.start_workers(3)
        await run.wait("first deliveries", lambda: run.received_at_least(20), 30)
        killed = []
        for _ in range(KILLS):
            await asyncio.sleep(run.rng.uniform(0.3, 2.0))
            victim = run.kill_random_worker()
            killed.append(victim.proc.pid)
            await asyncio.sleep(run.rng.uniform(0.0, 1.0))
            run.start_worker()
        assert len(run.running()) == 3
        await run.settle(timeout=90)
        summary = await run.check()
    print(f"killed {killed}; {summary}")
