"""A sync in a worker of the test's loop, against the simulated Clever on 127.0.0.1: the
cursor is taken before any record is read, a type's deletes wait until it was read to its
end (a failure in the middle of a type deletes nothing, and the sync goes on from the page
it stopped at), new records can join the roster unannounced, and ``RELAY_RESYNC_EVERY``
starts syncs by itself."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from relay.clever.client import CleverClient
from relay.clever.simulator import Simulator
from relay.db import Database
from relay.db.models import WITH_TOKEN, District, Event, EventSource, Sync
from relay.queue import RedisQueue, open_redis
from relay.roster import syncs
from relay.roster.sync import DistrictSync, SyncContext
from relay.settings import Settings
from tests.support.roster import data_api_records, latest_sync, roster_records, start_sync
from tests.support.servers import ServerThread
from tests.support.worker import add_district, running_worker, wait_for, worker_settings


def only(sim: Simulator) -> Any:
    (district,) = sim.districts.values()
    return district


async def _succeeded(db: Database, district_id: str, n: int = 1) -> bool:
    async with db.read() as session:
        done = await session.exec(
            select(func.count())
            .select_from(Sync)
            .where(col(Sync.district_id) == district_id)
            .where(col(Sync.state) == "succeeded")
        )
        return int(done.one()) >= n


async def _sync_events(db: Database, action: str | None = None) -> list[dict[str, Any]]:
    query = select(Event.body).where(col(Event.source) == EventSource.SYNC)
    async with db.read() as session:
        bodies = [json.loads(b) for b in (await session.exec(query)).all()]
    return [b for b in bodies if action is None or b["type"].endswith("." + action)]


async def test_the_cursor_is_taken_before_any_record_is_read_and_the_roster_matches(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
) -> None:
    sim, server = simulator
    district = only(sim)
    sim.add_backlog(district.id, 30)
    await add_district(db, district.id, district.token, start_from="sync")
    await start_sync(db, district.id, syncs.INITIAL)
    sim.requests.clear()
    async with running_worker(worker_settings(settings, server.url), redis_url):
        await wait_for(lambda: _succeeded(db, district.id), 30)
    paths = [(r["path"], r["query"]) for r in sim.requests]
    first_record = next(i for i, (p, _) in enumerate(paths) if not p.endswith("/events"))
    seed = paths.index(("/v3.1/events", "ending_before=last&limit=1"))
    assert seed < first_record, paths[:5]
    records = data_api_records(server.url, district.token)
    assert await roster_records(db, district.id) == records
    created = await _sync_events(db, "created")
    assert len(created) == len(records)  # the roster started empty: every record is news
    async with db.read() as session:
        shown = await session.get(District, district.id)
    assert shown is not None
    assert shown.cursor == district.store.newest()  # polls on from the cursor taken first
    assert shown.status == "active"


async def test_a_type_read_in_part_deletes_nothing_and_the_sync_goes_on_from_its_page(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
) -> None:
    sim, server = simulator
    district = only(sim)
    config = worker_settings(settings, server.url, sync_page_size=20)
    await add_district(db, district.id, district.token, start_from="sync")
    await start_sync(db, district.id, syncs.INITIAL)
    async with running_worker(config, redis_url):
        await wait_for(lambda: _succeeded(db, district.id), 30)
    drifted = sim.drift(district.id, deleted=3, updated=2, created=1)
    # Clever fails every users request: districts and schools were read, users were not
    sim.faults.add({"kind": "503", "probability": 1.0, "path": "/v3.1/users"})
    sync_id = await start_sync(db, district.id)
    before = len(await _sync_events(db, "deleted"))
    async with running_worker(config, redis_url):
        await wait_for(lambda: _failing(db, district.id), 30)
        assert len(await _sync_events(db, "deleted")) == before  # nothing read whole yet
        sim.faults.clear()
        sim.requests.clear()
        await wait_for(lambda: _succeeded(db, district.id, 2), 60)
    # it went on from users: what it had read and stored was not read again
    assert not [r for r in sim.requests if r["path"] in ("/v3.1/districts", "/v3.1/schools")]
    async with db.read() as session:
        sync = await session.get(Sync, sync_id)
    assert sync is not None
    assert sync.deleted == 3, (sync, drifted)
    assert sync.updated >= 2
    assert await roster_records(db, district.id) == data_api_records(server.url, district.token)


async def _failing(db: Database, district_id: str) -> bool:
    async with db.read() as session:
        district = await session.get(District, district_id)
    return district is not None and bool(district.last_error) and district.status == "syncing"


async def test_records_can_join_the_roster_unannounced(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
) -> None:
    sim, server = simulator
    district = only(sim)
    await add_district(db, district.id, district.token)
    await start_sync(db, district.id, emit_created=False)
    async with running_worker(worker_settings(settings, server.url), redis_url):
        await wait_for(lambda: _succeeded(db, district.id), 30)
    assert await roster_records(db, district.id) == data_api_records(server.url, district.token)
    assert await _sync_events(db) == []


async def test_resync_every_syncs_an_active_district_by_itself(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
) -> None:
    sim, server = simulator
    district = only(sim)
    await add_district(db, district.id, district.token)
    config = worker_settings(settings, server.url, resync_every=1.0)
    async with running_worker(config, redis_url):
        await wait_for(lambda: _succeeded(db, district.id, 2), 30)
    sync = await latest_sync(db, district.id)
    assert sync is not None
    assert sync.reason == "scheduled"


async def test_a_sync_that_keeps_failing_ends_failed_and_tells_the_admin(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
) -> None:
    sim, server = simulator
    district = only(sim)
    await add_district(db, district.id, district.token, start_from="sync")
    sync_id = await start_sync(db, district.id, syncs.INITIAL)
    sim.faults.add({"kind": "500", "probability": 1.0, "path": "/v3.1/schools"})
    async with running_worker(worker_settings(settings, server.url), redis_url):
        await wait_for(lambda: _state(db, sync_id, "failed"), 120)
        sim.faults.clear()
        async with db.read() as session:
            shown = await session.get(District, district.id)
            told = (
                await session.exec(
                    select(Event.body).where(col(Event.type) == "relay.district.sync_failed")
                )
            ).all()
        assert shown is not None
        assert shown.status == "error"
        assert "sync failed" in (shown.last_error or "")
        assert shown.cursor == district.store.newest()  # it polls on from the cursor taken
        (body,) = [json.loads(b) for b in told]
        assert body["data"]["object"]["sync"]["state"] == "failed"
        assert "500" in body["data"]["object"]["sync"]["error"]
        # asked again, it starts over and succeeds
        await start_sync(db, district.id)
        await wait_for(lambda: _succeeded(db, district.id), 30)
    assert await roster_records(db, district.id) == data_api_records(server.url, district.token)


async def _state(db: Database, sync_id: int, state: str) -> bool:
    async with db.read() as session:
        sync = await session.get(Sync, sync_id)
    return sync is not None and sync.state == state


async def test_deletes_beyond_one_chunk_all_go_even_with_no_subscriber(
    db: Database, redis_url: str, simulator: tuple[Simulator, ServerThread]
) -> None:
    """A type's deletes are stored a chunk per transaction; a chunk that queues no job
    (nobody subscribed) is still a chunk, and the next one follows."""
    sim, server = simulator
    district = only(sim)
    await add_district(db, district.id, district.token, start_from="sync", lease_owner="w1")
    await start_sync(db, district.id, syncs.INITIAL)
    pool = await open_redis(redis_url)
    try:
        async with CleverClient(server.url) as clever:
            context = SyncContext(db, clever, RedisQueue(pool), "w1", 30.0, 7, delete_chunk=2)

            async def run() -> None:
                async with db.read() as session:
                    shown = await session.get(District, district.id, options=[WITH_TOKEN])
                assert shown is not None
                await DistrictSync(context, shown).run()

            await run()
            drifted = sim.drift(district.id, deleted=5, record_types=["users"])
            await start_sync(db, district.id)
            await run()
    finally:
        await pool.aclose()
    sync = await latest_sync(db, district.id)
    assert sync is not None
    assert sync.deleted == 5 == len(drifted.deleted)
    assert await roster_records(db, district.id) == data_api_records(server.url, district.token)
