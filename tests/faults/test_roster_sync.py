"""The roster promise, tried with real workers against the simulated Clever: a consumer that
applies an ordered subscription's deliveries in arrival order holds exactly Clever's Data API
records, from registration with ``start_from: "sync"``, after a gap the relay heals by
itself, and after a sync interrupted by a SIGKILL and by Clever's 429 and 500.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from relay.db import Database
from relay.db.models import Delivery, District, Event, EventSource, Sync
from relay.roster import syncs
from tests.support.roster import (
    Mirror,
    data_api_records,
    latest_sync,
    roster_records,
    start_sync,
    sync_of,
)
from tests.support.scenario import Hook, Scenario, ScenarioFactory

#: the simulator and the relay agree on a short retention, so a test can outlive it
RETENTION = 12.0
ENV = {"RELAY_CLEVER_RETENTION": str(RETENTION), "RELAY_POLL_INTERVAL": "0.2"}
SMALL = {
    "schools_per_district": 2,
    "students_per_school": 12,
    "teachers_per_school": 2,
    "sections_per_school": 3,
    "retention_seconds": RETENTION,
}


async def register_for_sync(run: Scenario) -> str:
    """The district registered as ``POST /v1/districts`` with ``start_from: "sync"`` does."""
    (district,) = run.sim.districts.values()
    async with run.db.write() as session:
        session.add(District(id=district.id, token=district.token, start_from="sync"))
    await start_sync(run.db, district.id, syncs.INITIAL)
    run.district_ids.append(district.id)
    return district.id


async def ops_hook(run: Scenario) -> Hook:
    return await run.hook("ops", owner="admin", record_types=["relay"])


def mirror_of(hook: Hook) -> Mirror:
    assert hook.receiver is not None
    with hook.receiver.lock:
        bodies = [r.body for r in hook.receiver.received]
    return Mirror.of(bodies)


async def settled(run: Scenario, district_id: str) -> bool:
    """The district polls again after its last sync, has stored Clever's newest event, and
    nothing waits to be sent."""
    async with run.db.read() as session:
        district = await session.get(District, district_id)
        waiting = await session.exec(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.status).in_(("pending", "retrying")))
        )
        count = int(waiting.one())
    sync = await latest_sync(run.db, district_id)
    newest = run.sim.districts[district_id].store.newest()
    return (
        district is not None
        and (newest is None or district.cursor == newest)  # every event Clever has, stored
        and district.status == "active"
        and district.caught_up
        and sync is not None
        and sync.state == "succeeded"
        and count == 0
    )


async def wait_for_mirror(run: Scenario, hook: Hook, district_id: str) -> dict[Any, Any]:
    """Until the consumer's mirror equals Clever's records (the assertion names the
    difference if it never does)."""
    token = run.sim.districts[district_id].token
    records: dict[Any, Any] = {}

    async def equal() -> bool:
        nonlocal records
        if not await settled(run, district_id):
            return False
        records = await asyncio.to_thread(data_api_records, run.clever_url, token)
        if mirror_of(hook).records == records:
            return True
        await asyncio.sleep(1)  # a full read per second at most: the token's rate limit
        return False

    try:
        await run.wait("the mirror to equal Clever's records", equal, 90)
    except AssertionError:
        mirror = mirror_of(hook).records
        missing = sorted(set(records) - set(mirror))[:5]
        extra = sorted(set(mirror) - set(records))[:5]
        differ = [k for k in records if k in mirror and mirror[k] != records[k]][:5]
        raise AssertionError(
            f"mirror != Data API: missing {missing}, extra {extra}, different {differ}\n"
            f"{await run.describe()}\n{run.logs_tail()}"
        ) from None
    return records


def assert_no_crash(run: Scenario) -> None:
    for worker in run.workers:
        assert "poller crashed" not in worker.output(), worker.output()[-3000:]


async def events_of(db: Database, source: str) -> int:
    async with db.read() as session:
        result = await session.exec(
            select(func.count()).select_from(Event).where(col(Event.source) == source)
        )
        return int(result.one())


def synced_notices(hook: Hook) -> list[dict[str, Any]]:
    assert hook.receiver is not None
    with hook.receiver.lock:
        bodies = [json.loads(r.body) for r in hook.receiver.received]
    return [b for b in bodies if b["type"] == "relay.district.synced"]


async def test_a_consumer_holds_the_roster_from_the_start_and_after_a_healed_gap(
    make_scenario: ScenarioFactory,
) -> None:
    with make_scenario(seed=3, env=ENV, sim_config=SMALL) as run:
        district_id = next(iter(run.sim.districts))
        run.sim.add_backlog(district_id, 40)  # events from before: the sync covers them
        mirror = await run.hook("mirror", ordered=True)
        ops = await ops_hook(run)
        await register_for_sync(run)
        run.start_worker()
        records = await wait_for_mirror(run, mirror, district_id)
        first = synced_notices(ops)
        assert len(first) == 1, first
        assert first[0]["data"]["object"]["sync"]["created"] == len(records)
        assert first[0]["data"]["object"]["status"] == "active"

        # a quiet district whose cursor merely ages out is not a gap
        await asyncio.sleep(RETENTION + 1)
        async with run.db.read() as session:
            district = await session.get(District, district_id)
        assert district is not None
        assert district.status == "active", district
        assert len(synced_notices(ops)) == 1

        # behind: Clever holds back the events while records change, with and without
        # events, and the events past the relay's cursor expire
        hold = run.sim.faults.add({"kind": "503", "probability": 1.0, "path": "/v3.1/events"})
        run.sim.generate(district_id, 60)
        run.sim.drift(district_id, created=3, updated=5, deleted=2)
        await asyncio.sleep(RETENTION + 1)
        run.sim.expire(district_id, older_than_seconds=0)
        run.sim.faults.rules.remove(hold)
        run.set_event_rate(3)  # changes made while the relay syncs arrive as events too
        await run.wait("a second sync", lambda: _syncs_at_least(run.db, 2), 60)
        run.quiesce_clever()
        await wait_for_mirror(run, mirror, district_id)
        notices = synced_notices(ops)
        assert len(notices) == 2, notices
        healed = notices[1]["data"]["object"]["sync"]
        assert healed["reason"] == "gap", healed
        assert healed["updated"] + healed["created"] > 0, healed
        assert await roster_records(run.db, district_id) == mirror_of(mirror).records

        # a sync of an unchanged district stores no event
        before = await events_of(run.db, EventSource.SYNC)
        sync_id = await start_sync(run.db, district_id)
        await run.wait("the re-sync", lambda: _succeeded(run.db, sync_id), 60)
        again = await sync_of(run.db, sync_id)
        assert (again.created, again.updated, again.deleted) == (0, 0, 0)
        assert again.records_read == len(mirror_of(mirror).records)
        assert await events_of(run.db, EventSource.SYNC) == before
        assert_no_crash(run)


async def test_a_sync_survives_a_sigkill_a_429_and_a_500_and_deletes_nothing_that_exists(
    make_scenario: ScenarioFactory,
) -> None:
    env = ENV | {"RELAY_SYNC_PAGE_SIZE": "15", "RELAY_POLL_LEASE": "2"}
    with make_scenario(seed=5, env=env, sim_config=SMALL) as run:
        district_id = next(iter(run.sim.districts))
        mirror = await run.hook("mirror", ordered=True)
        await register_for_sync(run)
        run.start_worker()
        await run.wait("a first sync", lambda: _syncs_at_least(run.db, 1, "succeeded"), 60)
        await wait_for_mirror(run, mirror, district_id)

        # records vanish without events: only a sync read whole may find them gone
        run.sim.drift(district_id, deleted=4, updated=4, created=2)
        slow = run.sim.faults.add(
            {"kind": "slow", "delay": 0.3, "probability": 1.0, "path": "/v3.1/users"}
        )
        run.sim.faults.add({"kind": "429", "count": 1, "reset_in": 1, "path": "/v3.1/sections"})
        run.sim.faults.add({"kind": "500", "count": 1, "path": "/v3.1/users"})
        sync_id = await start_sync(run.db, district_id)
        await run.wait("the sync to read users", lambda: _reading(run.db, sync_id, "users"), 60)
        run.workers[-1].kill()
        run.sim.faults.rules.remove(slow)
        run.start_worker()
        await run.wait("the sync to finish", lambda: _succeeded(run.db, sync_id), 90)
        records = await wait_for_mirror(run, mirror, district_id)
        falsely = [key for key, _ in mirror_of(mirror).deleted if key in records]
        assert not falsely, f"sent as deleted but still at Clever: {falsely}"
        sync = await sync_of(run.db, sync_id)
        assert sync.deleted >= 4, sync
        assert sync.updated >= 4, sync
        assert_no_crash(run)


async def _syncs_at_least(db: Database, n: int, state: str | None = None) -> bool:
    query = select(func.count()).select_from(Sync)
    if state is not None:
        query = query.where(col(Sync.state) == state)
    async with db.read() as session:
        return int((await session.exec(query)).one()) >= n


async def _succeeded(db: Database, sync_id: int) -> bool:
    return (await sync_of(db, sync_id)).state == "succeeded"


async def _reading(db: Database, sync_id: int, record_type: str) -> bool:
    sync = await sync_of(db, sync_id)
    return sync.record_type == record_type and sync.records_read > 0
