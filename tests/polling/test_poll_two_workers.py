"""Two ``relay worker`` processes share four districts through leases: a district's requests to
Clever never overlap (one poller at a time), leases move between the workers, a SIGKILLed
worker's districts are taken over once its leases expire (not before), and every event is
stored exactly once."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database
from relay.db.models import District, Event
from tests.support.processes import RelayProcess, process_env
from tests.support.servers import ServerThread, serve
from tests.support.worker import add_district, wait_for

DISTRICTS = 4
BACKLOG = 1_500


def worker_env(
    database_url: str, redis_url: str, clever_url: str, data_dir: Path
) -> dict[str, str]:
    return process_env(database_url, redis_url, clever_url, data_dir, RELAY_CLEVER_PAGE_SIZE="250")


@pytest.fixture
def clever() -> Iterator[tuple[Simulator, ServerThread]]:
    config = SimulatorConfig(districts=DISTRICTS, seed=31, fault_probability=0.05)
    sim = Simulator(config)
    for district_id in sim.districts:
        sim.add_backlog(district_id, BACKLOG)
    sim.events_per_second = 10
    with serve(create_app(sim)) as server:
        yield sim, server


async def owners(db: Database) -> dict[str, tuple[str | None, datetime | None]]:
    async with db.read() as session:
        rows = await session.exec(select(District.id, District.lease_owner, District.lease_until))
        return {d: (owner, until) for d, owner, until in rows.all()}


def pid_of(owner: str | None) -> int | None:
    return None if owner is None else int(owner.split(":")[-2])


async def all_held_by(db: Database, pid: int) -> bool:
    return all(pid_of(owner) == pid for owner, _ in (await owners(db)).values())


def sim_requests(server: ServerThread) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(server.url + "/_sim/requests").json()["data"]
    return data


async def test_two_workers_poll_each_district_one_at_a_time_and_survive_a_sigkill(
    db: Database,
    database_url: str,
    redis_url: str,
    clever: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, server = clever
    for district in sim.districts.values():
        await add_district(db, district.id, district.token, start_from="earliest")
    env = worker_env(database_url, redis_url, server.url, tmp_path / "data")

    a = RelayProcess(["worker"], env, tmp_path / "worker-a.log")
    b: RelayProcess | None = None
    try:
        await wait_for(lambda: all_held_by(db, a.proc.pid), timeout=20)
        b = RelayProcess(["worker"], env, tmp_path / "worker-b.log")
        pids = {a.proc.pid: "A", b.proc.pid: "B"}
        # A 429 makes a poller release its lease until the reset; whichever worker scans first
        # afterwards takes it. Rate-limit one district of the busier worker at a time until
        # both workers hold districts at the same time.
        shared = False
        started = time.monotonic()
        while not shared and time.monotonic() < started + 40:
            current = await owners(db)
            held_by = [pid_of(owner) for owner, _ in current.values()]
            busier = max(set(held_by) - {None}, key=held_by.count, default=None)
            candidates = [d for d, (o, _) in current.items() if busier and pid_of(o) == busier]
            if candidates:
                fault = {"kind": "429", "reset_in": 1, "district": candidates[0], "count": 1}
                httpx.post(server.url + "/_sim/faults", json=fault).raise_for_status()
            for _ in range(40):
                held = {pid_of(owner) for owner, _ in (await owners(db)).values()}
                if held >= set(pids):
                    shared = True
                    break
                await asyncio.sleep(0.1)
        shared_after = time.monotonic() - started
        assert shared, "both workers should hold districts at once"
        # Kill A, its polling child with it (its host died), while it holds a district.
        await wait_for(lambda: _holds_any(db, a.proc.pid), timeout=20, interval=0.05)
        a.kill_tree()
        killed_at = time.time()
        at_kill = await owners(db)
        a_districts = {
            d: until for d, (owner, until) in at_kill.items() if pid_of(owner) == a.proc.pid
        }
        assert a_districts, "A held districts when killed"

        await wait_for(lambda: all_held_by(db, b.proc.pid), timeout=20)
        httpx.post(server.url + "/_sim/rate", json={"events_per_second": 0}).raise_for_status()
        await wait_for(lambda: _all_stored(db, sim), timeout=40)
    finally:
        a.stop()
        if b is not None:
            assert b.stop() == 0, b.output()[-3000:]

    log = sim_requests(server)
    by_district: dict[str, list[dict[str, Any]]] = {}
    for entry in log:
        assert entry["district"] in sim.districts, entry
        by_district.setdefault(entry["district"], []).append(entry)
    for district_id, entries in by_district.items():
        entries.sort(key=lambda e: e["started_monotonic"])
        for before, after in itertools.pairwise(entries):
            assert after["started_monotonic"] >= before["ended_monotonic"], (
                f"district {district_id}: overlapping requests {before} and {after}"
            )
    # Not before the killed worker's lease ran out did anyone poll its districts again.
    for district_id, lease_until in a_districts.items():
        assert lease_until is not None
        after_kill = [e for e in by_district[district_id] if e["started_wall"] > killed_at]
        assert after_kill, f"{district_id} was taken over"
        first = min(e["started_wall"] for e in after_kill)
        assert first >= lease_until.timestamp(), (district_id, first, lease_until)

    async with db.read() as session:
        rows = (
            await session.exec(select(Event.district_id, Event.id).order_by(col(Event.id)))
        ).all()
    for district_id, district in sim.districts.items():
        assert [i for d, i in rows if d == district_id] == list(district.store.ids)
    assert len(rows) == sum(len(d.store) for d in sim.districts.values())
    faults = sum(1 for e in log if e["fault"])
    print(
        f"\nboth workers held districts {shared_after:.1f}s after B started; "
        f"{len(log)} requests ({faults} faulted), {len(rows)} events stored once; "
        f"B took over the {len(a_districts)} of {DISTRICTS} districts A held at the kill"
    )


async def _holds_any(db: Database, pid: int) -> bool:
    return any(pid_of(owner) == pid for owner, _ in (await owners(db)).values())


async def _all_stored(db: Database, sim: Simulator) -> bool:
    async with db.read() as session:
        rows = (await session.exec(select(District.id, District.cursor))).all()
    newest = {d: district.store.newest() for d, district in sim.districts.items()}
    return dict(rows) == newest
