"""The poller against a real (simulated) Clever over HTTP: a 429's reset is honoured, a cursor
older than retention is reported as ``gap_detected`` through the API, and a rotated token is
picked up from ``/oauth/tokens`` (or, without credentials, the district turns unauthorized)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from relay.api.app import create_app as create_api
from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database
from relay.db.models import WITH_TOKEN, District, Event
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.servers import ServerThread, serve
from tests.support.worker import add_district, running_worker, wait_for, worker_settings


@pytest.fixture
def clever() -> Iterator[tuple[Simulator, ServerThread]]:
    sim = Simulator(SimulatorConfig(districts=1, seed=5, retention_seconds=60))
    with serve(create_app(sim)) as server:
        yield sim, server


def only_district(sim: Simulator) -> Any:
    return next(iter(sim.districts.values()))


async def stored_ids(db: Database) -> list[str]:
    async with db.read() as session:
        return list(
            (
                await session.exec(
                    select(Event.id).where(col(Event.owner).is_(None)).order_by(col(Event.id))
                )
            ).all()
        )


async def load(db: Database, district_id: str) -> District:
    """The district with its token (which the ORM loads only when asked)."""
    async with db.read() as session:
        district = await session.get(District, district_id, options=[WITH_TOKEN])
    assert district is not None
    return district


def sim_requests(server: ServerThread) -> list[dict[str, Any]]:
    """The simulator's request log, over its control API."""
    data: list[dict[str, Any]] = httpx.get(server.url + "/_sim/requests").json()["data"]
    return data


def generate(server: ServerThread, district_id: str, count: int) -> None:
    url = f"{server.url}/_sim/districts/{district_id}/events"
    httpx.post(url, json={"generate": count}).raise_for_status()


def has_all(db: Database, sim: Simulator, district_id: str) -> Any:
    async def check() -> bool:
        return await stored_ids(db) == list(sim.districts[district_id].store.ids)

    return check


async def test_no_request_before_a_429_reset_and_polling_resumes_after(
    db: Database, settings: Settings, redis_url: str, clever: tuple[Simulator, ServerThread]
) -> None:
    sim, server = clever
    district = only_district(sim)
    sim.generate(district.id, 300)
    await add_district(db, district.id, district.token, start_from="earliest")
    config = worker_settings(settings, server.url, poll_lease=2.0, clever_page_size=100)
    async with running_worker(config, redis_url):
        await wait_for(has_all(db, sim, district.id), timeout=20)
        httpx.post(
            server.url + "/_sim/faults",
            json={"kind": "429", "reset_in": 2, "district": district.id, "count": 1},
        ).raise_for_status()
        await wait_for(lambda: _answered(server, district.id, 429), timeout=10)
        limited = next(r for r in sim_requests(server) if r["status"] == 429)
        reset = limited["rate_limit_reset"]
        assert reset >= limited["started_wall"] + 1.9
        generate(server, district.id, 150)  # arrives while rate limited
        await wait_for(has_all(db, sim, district.id), timeout=20)
        status = (await load(db, district.id)).status

    later = [r for r in sim.requests if r["seq"] > limited["seq"] and r["district"] == district.id]
    assert later, "polling resumed"
    early = [r for r in later if r["started_wall"] < reset]
    assert early == [], f"requests before the reset at {reset}: {early}"
    assert [r["status"] for r in later if r["status"] != 200] == []
    assert status == "active"
    assert len(await stored_ids(db)) == 450
    print(
        f"\n429 at {limited['started_wall']:.2f}, reset {reset}; first request after: "
        f"{min(r['started_wall'] for r in later):.2f}; {len(later)} requests after"
    )


async def test_a_cursor_older_than_retention_is_shown_as_gap_detected_and_polling_goes_on(
    db: Database,
    settings: Settings,
    runtime: RuntimeSecrets,
    redis_url: str,
    clever: tuple[Simulator, ServerThread],
) -> None:
    """Clever keeps 60 s here. The relay last stored an event from 5 minutes ago and never
    caught up since; the events after it that are older than 60 s have expired at Clever.
    With RELAY_RESYNC_ON_GAP off the gap waits for a person (tests/faults/test_roster_sync.py
    has the default: a sync heals it)."""
    sim, server = clever
    district = only_district(sim)
    sim.add_backlog(district.id, 300, span=600)  # one event every 2 s over the last 10 min
    store = district.store
    cursor = store.ids[150]  # ~5 minutes old
    assert sim.expire(older_than_seconds=60) > 150, "Clever dropped what is older than 60 s"
    retained = list(store.ids)
    assert retained[0] > cursor
    await add_district(
        db, district.id, district.token, start_from="earliest", cursor=cursor, seeded=True
    )
    config = worker_settings(
        settings, server.url, poll_lease=2.0, clever_retention=60.0, resync_on_gap=False
    )
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with serve(create_api(settings, runtime)) as api:
        async with running_worker(config, redis_url):
            await wait_for(lambda: _stored_at_least(db, len(retained)), timeout=20)
            shown = httpx.get(f"{api.url}/v1/districts/{district.id}", headers=admin).json()
            assert shown["status"] == "gap_detected", shown
            assert "possible gap" in shown["last_error"]
            assert "Data API" in shown["last_error"]
            # polling continues: new events still arrive while the gap is flagged
            generate(server, district.id, 20)
            await wait_for(has_all(db, sim, district.id), timeout=20)
            shown = httpx.get(f"{api.url}/v1/districts/{district.id}", headers=admin).json()
            assert shown["status"] == "gap_detected"
            assert shown["cursor"] == store.newest()
            # the operator acknowledges; the cursor is fresh now, so no new gap is reported
            patched = httpx.patch(
                f"{api.url}/v1/districts/{district.id}", headers=admin, json={"status": "active"}
            )
            assert patched.status_code == 200, patched.text
            generate(server, district.id, 5)
            await wait_for(has_all(db, sim, district.id), timeout=20)
            shown = httpx.get(f"{api.url}/v1/districts/{district.id}", headers=admin).json()
            assert shown["status"] == "active", shown
            assert shown["last_error"] is None
    assert await stored_ids(db) == list(store.ids)
    assert cursor not in await stored_ids(db)


async def test_a_rotated_token_is_fetched_again_after_a_401_and_nothing_is_lost(
    db: Database, settings: Settings, redis_url: str
) -> None:
    sim = Simulator(SimulatorConfig(districts=1, seed=9, events_per_second=40))
    with serve(create_app(sim)) as server:
        district = only_district(sim)
        old_token = district.token
        await add_district(db, district.id, old_token, start_from="earliest")
        config = worker_settings(
            settings,
            server.url,
            poll_lease=2.0,
            clever_oauth_url=server.url,
            clever_client_id=sim.config.client_id,
            clever_client_secret=sim.config.client_secret,
        )
        async with running_worker(config, redis_url):
            await wait_for(lambda: _stored_at_least(db, 20), timeout=20)
            before_rotation = max(r["seq"] for r in sim_requests(server))
            rotated = httpx.post(f"{server.url}/_sim/districts/{district.id}/rotate-token")
            new_token = rotated.json()["token"]
            count_at_rotation = len(district.store)
            await wait_for(lambda: _stored_at_least(db, count_at_rotation + 40), timeout=20)
            httpx.post(f"{server.url}/_sim/rate", json={"events_per_second": 0})
            await wait_for(has_all(db, sim, district.id), timeout=20)
            row = await load(db, district.id)

    after = [r for r in sim.requests if r["seq"] > before_rotation]
    assert any(r["status"] == 401 for r in after), "the old token was refused"
    assert any(r["path"] == "/oauth/tokens" and r["status"] == 200 for r in after)
    assert (row.token, row.token_source, row.status) == (new_token, "discovered", "active")
    assert row.token != old_token
    ids = await stored_ids(db)
    assert ids == list(district.store.ids)
    assert len(ids) > count_at_rotation + 40
    print(f"\nrotation after {count_at_rotation} events; {len(ids)} stored in all, none lost")


async def test_without_credentials_a_401_marks_the_district_unauthorized(
    db: Database, settings: Settings, redis_url: str, clever: tuple[Simulator, ServerThread]
) -> None:
    sim, server = clever
    district = only_district(sim)
    sim.generate(district.id, 10)
    await add_district(db, district.id, district.token, start_from="earliest")
    config = worker_settings(settings, server.url, poll_lease=2.0)
    assert config.clever_credentials is None
    async with running_worker(config, redis_url):
        await wait_for(lambda: _stored_at_least(db, 10), timeout=20)
        httpx.post(f"{server.url}/_sim/districts/{district.id}/rotate-token").raise_for_status()
        await wait_for(lambda: _status(db, district.id, "unauthorized"), timeout=20)
        row = await load(db, district.id)
    assert row.last_error is not None
    assert "401" in row.last_error
    assert row.lease_owner is None
    assert district.token not in row.last_error
    assert not any(r["path"] == "/oauth/tokens" for r in sim.requests)


async def _answered(server: ServerThread, district_id: str, status: int) -> bool:
    log = sim_requests(server)
    return any(r["status"] == status and r["district"] == district_id for r in log)


async def _stored_at_least(db: Database, n: int) -> bool:
    return len(await stored_ids(db)) >= n


async def _status(db: Database, district_id: str, status: str) -> bool:
    return (await load(db, district_id)).status == status


async def test_starting_from_latest_on_a_quiet_district_is_not_a_gap(
    db: Database, settings: Settings, redis_url: str
) -> None:
    """Clever's newest event is older than the gap threshold (97 % of retention) but still
    retained: seeding from it has seen everything up to now, so there is no gap."""
    sim = Simulator(SimulatorConfig(districts=1, seed=13, retention_seconds=300))
    district = only_district(sim)
    sim.add_backlog(district.id, 1, span=295)
    quiet_since = district.store.newest()
    with serve(create_app(sim)) as server:
        await add_district(db, district.id, district.token, start_from="latest")
        config = worker_settings(settings, server.url, poll_lease=2.0, clever_retention=300.0)
        async with running_worker(config, redis_url):
            await wait_for(lambda: _polled_twice(db, district.id, quiet_since), timeout=20)
            generate(server, district.id, 3)
            await wait_for(lambda: _stored_at_least(db, 3), timeout=20)
            row = await load(db, district.id)
    assert (row.status, row.last_error) == ("active", None)
    assert await stored_ids(db) == district.store.ids[1:]


async def test_a_request_hanging_past_half_the_lease_is_abandoned_and_retried(
    db: Database, settings: Settings, redis_url: str, clever: tuple[Simulator, ServerThread]
) -> None:
    sim, server = clever
    district = only_district(sim)
    generate(server, district.id, 5)
    fault = {"kind": "slow", "delay": 1.5, "district": district.id, "count": 1}
    httpx.post(server.url + "/_sim/faults", json=fault).raise_for_status()
    await add_district(db, district.id, district.token, start_from="earliest")
    config = worker_settings(settings, server.url, poll_lease=2.0)

    async def abandoned() -> bool:
        return "half the poll lease" in ((await load(db, district.id)).last_error or "")

    async with running_worker(config, redis_url):
        await wait_for(abandoned, timeout=20, interval=0.02)
        await wait_for(has_all(db, sim, district.id), timeout=20)
        row = await load(db, district.id)
    # the next poll came through: the passing error is cleared
    assert (row.status, row.last_error) == ("active", None)


async def _polled_twice(db: Database, district_id: str, cursor: str | None) -> bool:
    row = await load(db, district_id)
    first = row.last_polled_at
    if row.cursor != cursor or first is None:
        return False
    await asyncio.sleep(0.5)
    later = (await load(db, district_id)).last_polled_at
    return later is not None and later > first
