"""10,000 events through a misbehaving Clever and a ``relay worker`` killed with SIGKILL mid-run:
the events end up stored exactly once, in id order, and the cursor is Clever's newest id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import col, select

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database
from relay.db.models import Delivery, District, Event
from tests.support.processes import RelayProcess, process_env
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, serve
from tests.support.worker import add_district, add_subscription, wait_for

TOTAL = 10_000
PAGE = 250


def worker_env(
    database_url: str, redis_url: str, clever_url: str, data_dir: Path
) -> dict[str, str]:
    return process_env(
        database_url,
        redis_url,
        clever_url,
        data_dir,
        RELAY_CLEVER_PAGE_SIZE=str(PAGE),
        RELAY_RETRY_SCHEDULE="0.5,0.5",
        RELAY_DELIVERY_TIMEOUT="2",
    )


@pytest.fixture
def faulty_clever() -> Iterator[tuple[Simulator, ServerThread]]:
    """Random 5xx, HTML, truncated JSON and 429s on 20 % of requests, plus slow answers."""
    sim = Simulator(SimulatorConfig(districts=1, seed=21, fault_probability=0.2))
    sim.faults.add({"kind": "slow", "probability": 0.15, "delay": 0.3})
    with serve(create_app(sim)) as server:
        yield sim, server


async def stored(db: Database) -> list[tuple[str, datetime]]:
    async with db.read() as session:
        rows = await session.exec(select(Event.id, Event.received_at).order_by(col(Event.id)))
        return [(event_id, received_at) for event_id, received_at in rows.all()]


async def load_district(db: Database, district_id: str) -> District:
    async with db.read() as session:
        district = await session.get(District, district_id)
    assert district is not None
    return district


async def test_ten_thousand_events_survive_faults_and_a_sigkilled_worker(
    db: Database,
    database_url: str,
    redis_url: str,
    faulty_clever: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, server = faulty_clever
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, TOTAL)
    expected = list(district.store.ids)
    assert len(expected) == TOTAL
    await add_district(db, district.id, district.token, start_from="earliest")
    # A narrow subscription: ~2 % of events, so the outbox is checked without delivering 10k.
    receiver = Receiver()
    env = worker_env(database_url, redis_url, server.url, tmp_path / "data")

    with serve(receiver.app()) as hook:
        sub = await add_subscription(db, hook.url, record_types=["districts", "terms"])
        first = RelayProcess(["worker"], env, tmp_path / "worker-1.log")
        try:
            # Kill it once it has stored some pages but far from all of them.
            await wait_for(lambda: _count_at_least(db, 1_000), timeout=40, interval=0.02)
            first.kill()
        finally:
            first.stop()
        at_kill = len(await stored(db))
        holder = (await load_district(db, district.id)).lease_owner
        assert 0 < at_kill < TOTAL, f"the kill should land mid-run ({at_kill} stored)"
        # Still the dead worker's (or released just before, after a 429 or a long backoff).
        assert holder is None or f":{first.proc.pid}:" in holder

        second = RelayProcess(["worker"], env, tmp_path / "worker-2.log")
        try:
            await wait_for(lambda: _caught_up(db, district.id, expected[-1]), timeout=60)
        finally:
            assert second.stop() == 0, second.output()[-3000:]

    rows = await stored(db)
    ids = [event_id for event_id, _ in rows]
    assert ids == expected, "exactly Clever's events, each once"
    received = [received_at for _, received_at in rows]
    assert received == sorted(received), "stored page by page in id order: the cursor never skipped"
    final = await load_district(db, district.id)
    assert final.cursor == expected[-1] == sim.state()["districts"][0]["newest_event_id"]
    assert final.status == "active"

    # Every stored event has its deliveries (same transaction), none twice.
    async with db.read() as session:
        deliveries = (await session.exec(select(Delivery.event_id))).all()
    matching = {
        e.id for e in district.store.events if e.type.split(".")[0] in ("districts", "terms")
    }
    assert sorted(deliveries) == sorted(matching)
    assert sub.id

    faults = [r for r in sim.requests if r["fault"]]
    kinds = {r["fault"] for r in faults}
    print(
        f"\nstored at kill: {at_kill}; requests: {len(sim.requests)}; faults: {len(faults)} "
        f"{sorted(kinds)}; deliveries: {len(deliveries)}"
    )
    assert kinds >= {"slow"}
    assert kinds & {"500", "502", "503", "html", "truncated"}


async def _count_at_least(db: Database, n: int) -> bool:
    async with db.read() as session:
        rows = await session.exec(select(Event.id).limit(n))
        return len(rows.all()) >= n


async def _caught_up(db: Database, district_id: str, newest: str) -> bool:
    return (await load_district(db, district_id)).cursor == newest
