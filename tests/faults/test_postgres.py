"""PostgreSQL restarted mid-run (a private cluster of the test's own, never the shared
server): workers keep running, reconnect by themselves, and nothing is lost. PostgreSQL
backend only: on SQLite there is no database server to restart."""

from __future__ import annotations

import asyncio

from relay.db import Database
from tests.support.postgres import PrivatePostgres
from tests.support.scenario import Answer, ScenarioFactory


def slow(k: int) -> Answer:
    return 204, {}, 0.05


async def test_a_postgres_restart_mid_run_loses_nothing(
    make_scenario: ScenarioFactory, private_postgres: PrivatePostgres
) -> None:
    db = Database(private_postgres.url)
    try:
        with make_scenario(
            seed=43,
            db=db,
            database_url=private_postgres.url,
            env={"RELAY_CLEVER_PAGE_SIZE": "50"},
        ) as run:
            await run.add_districts(backlog=200)
            await run.hook("slow", answer=slow)
            await run.hook("users", answer=slow, record_types=["users"])
            run.set_event_rate(10)
            run.start_workers(2)
            await run.wait("deliveries under way", lambda: run.received_at_least(40), 30)
            await asyncio.to_thread(private_postgres.stop, "fast")
            await asyncio.sleep(2)  # Clever keeps producing; receivers keep answering
            await asyncio.to_thread(private_postgres.start)
            await db.dispose()  # the test's own pool holds dead connections too
            await run.settle(timeout=60)
            assert len(run.running()) == 2, "the workers rode it out: " + run.logs_tail()
            await run.check()
    finally:
        await db.dispose()
