"""Quiet polls and the lease keeper, with a poll supervisor in the test's loop against the
simulator and the real database: an empty poll writes nothing, all of a worker's leases are
renewed together (with the quiet polls' times), and what an operator changes reaches the
poller at the next renewal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database, utcnow
from relay.db.models import District, DistrictStatus
from relay.polling import leases
from relay.polling.supervisor import PollSupervisor
from relay.settings import Settings
from tests.support.config import BACKEND
from tests.support.servers import ServerThread, serve
from tests.support.worker import add_district, wait_for, worker_context, worker_settings


@pytest.fixture
def clever() -> Iterator[tuple[Simulator, ServerThread]]:
    sim = Simulator(SimulatorConfig(districts=1, seed=41))
    with serve(create_app(sim)) as server:
        yield sim, server


@contextlib.asynccontextmanager
async def polling(settings: Settings, redis_url: str) -> AsyncIterator[PollSupervisor]:
    async with worker_context(settings, redis_url) as app:
        supervisor = PollSupervisor(app.polling)
        task = asyncio.create_task(supervisor.run())
        try:
            yield supervisor
        finally:
            supervisor.stop.set()
            await asyncio.wait_for(task, 30)


def polls(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r["path"] == "/v3.1/events" and r["status"] == 200)


async def row(db: Database, district_id: str) -> District:
    async with db.read() as session:
        district = await session.get(District, district_id)
    assert district is not None
    return district


async def test_an_empty_poll_of_a_caught_up_district_writes_nothing(
    db: Database,
    settings: Settings,
    redis_url: str,
    clever: tuple[Simulator, ServerThread],
) -> None:
    """Before, every empty poll wrote the district (last_polled_at, caught_up_at, the lease):
    two writes per district every interval. Now the first poll (which finds the district
    caught up) is stored, and the next ones only in memory until the keeper's renewal."""
    sim, server = clever
    district = next(iter(sim.districts.values()))
    await add_district(db, district.id, district.token, start_from="earliest")
    # lease 30 s: the keeper renews every 5 s, so not during this test's polls
    config = worker_settings(settings, server.url, poll_interval=0.05, poll_lease=30)
    async with polling(config, redis_url):
        await wait_for(lambda: _async(polls(sim) >= 3))
        await asyncio.sleep(0.1)  # the first poll's store has committed
        before = await row(db, district.id)
        assert before.caught_up
        assert before.last_polled_at is not None
        seen = polls(sim)
        await wait_for(lambda: _async(polls(sim) >= seen + 10))
        after = await row(db, district.id)
    assert (after.last_polled_at, after.caught_up_at, after.lease_until, after.updated_at) == (
        before.last_polled_at,
        before.caught_up_at,
        before.lease_until,
        before.updated_at,
    )


async def test_the_keeper_renews_the_leases_and_writes_the_quiet_polls(
    db: Database,
    settings: Settings,
    redis_url: str,
    clever: tuple[Simulator, ServerThread],
) -> None:
    """A 3 s lease renewed every second: polled for longer than a lease without a write of
    its own, the district stays this worker's (one poller all along), and last_polled_at
    follows the polls at most a renewal behind."""
    sim, server = clever
    district = next(iter(sim.districts.values()))
    await add_district(db, district.id, district.token, start_from="earliest")
    config = worker_settings(settings, server.url, poll_interval=0.1, poll_lease=3)
    async with polling(config, redis_url) as supervisor:
        await wait_for(lambda: _async(district.id in supervisor.tasks))
        task = supervisor.tasks[district.id]
        await asyncio.sleep(4.5)
        assert supervisor.tasks[district.id] is task
        assert not task.done()
        held = await row(db, district.id)
    assert held.lease_owner is not None
    assert held.lease_until is not None
    assert held.lease_until > utcnow()
    assert held.last_polled_at is not None
    assert held.last_polled_at > utcnow() - timedelta(seconds=2.5)


async def test_a_district_paused_meanwhile_stops_being_polled_at_the_next_renewal(
    db: Database,
    settings: Settings,
    redis_url: str,
    clever: tuple[Simulator, ServerThread],
) -> None:
    sim, server = clever
    district = next(iter(sim.districts.values()))
    await add_district(db, district.id, district.token, start_from="earliest")
    config = worker_settings(settings, server.url, poll_interval=0.1, poll_lease=3)
    async with polling(config, redis_url) as supervisor:
        await wait_for(lambda: _async(polls(sim) >= 3))
        async with db.write() as session:  # what PATCH status=paused does
            paused = await session.get(District, district.id)
            assert paused is not None
            paused.status, paused.updated_at = DistrictStatus.PAUSED, utcnow()
            session.add(paused)
        task = supervisor.tasks[district.id]
        await wait_for(lambda: _async(task.done()), timeout=5)  # (and maybe dropped already)
        seen = polls(sim)
        await asyncio.sleep(0.5)
        assert polls(sim) == seen
    stopped = await row(db, district.id)
    assert (stopped.status, stopped.lease_owner) == (DistrictStatus.PAUSED, None)


async def test_a_new_token_reaches_the_poller_at_the_next_renewal(
    db: Database,
    settings: Settings,
    redis_url: str,
    clever: tuple[Simulator, ServerThread],
) -> None:
    """The poller works from the district as it last read it; a token given by an operator
    (or discovery) bumps updated_at, the keeper notices and the poller reads it again: once
    the old token is revoked, a renewal later, the polls still succeed."""
    sim, server = clever
    district = next(iter(sim.districts.values()))
    old_token = district.token
    await add_district(db, district.id, old_token, start_from="earliest")
    config = worker_settings(settings, server.url, poll_interval=0.1, poll_lease=3)
    async with polling(config, redis_url):
        await wait_for(lambda: _async(polls(sim) >= 3))
        new_token = sim.rotate_token(district.id)
        sim.tokens[old_token] = district.id  # both valid for a while, as a rotation goes
        async with db.write() as session:  # what PATCH token=... does
            patched = await session.get(District, district.id)
            assert patched is not None
            patched.token, patched.updated_at = new_token, utcnow()
            session.add(patched)
        await asyncio.sleep(2.5)  # the keeper renews every second (a third of the lease)
        del sim.tokens[old_token]
        seen = polls(sim)
        await wait_for(lambda: _async(polls(sim) >= seen + 3), timeout=10)
    assert (await row(db, district.id)).status == DistrictStatus.ACTIVE


@pytest.mark.skipif(BACKEND != "postgresql", reason="row locks: PostgreSQL")
async def test_a_renewal_skips_a_district_whose_page_is_being_stored(
    db: Database, database_url: str
) -> None:
    """A page store holds its district's row locked: the renewal leaves that row alone (the
    store extends the lease) instead of waiting for it with every other row locked."""
    for district_id in ("d1", "d2"):
        await add_district(db, district_id, f"tok-{district_id}")
        assert await leases.acquire(db, district_id, "A", 30)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT id FROM districts WHERE id = 'd1' FOR UPDATE")
            renewal = await asyncio.wait_for(
                leases.renew_held(db, "A", ["d1", "d2"], 60, {}), timeout=5
            )
    finally:
        await engine.dispose()
    assert set(renewal.renewed) == {"d2"}
    assert renewal.busy == {"d1"}


async def _async(value: bool) -> bool:
    return value
