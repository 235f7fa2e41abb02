"""Clever simulator → poll → store → fan-out → deliver → receiver, all real."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func
from sqlmodel import select

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.db.models import Delivery, Event
from relay.fanout.matching import record_schools
from relay.settings import Settings
from tests.support.events import moved_out_of
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, serve
from tests.support.worker import (
    add_district,
    add_subscription,
    running_worker,
    wait_for,
    worker_settings,
)


async def scalar(db: Database, query: Any) -> int:
    async with db.read() as session:
        return int((await session.exec(query)).one())


async def test_events_reach_exactly_the_subscriptions_they_match(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 400)
    everything, filtered = Receiver(), Receiver()
    with serve(everything.app()) as all_srv, serve(filtered.app()) as school_srv:
        sub_all = await add_subscription(db, all_srv.url + "/all")
        events = [e for e in _sim_events(sim, district.id)]
        moves = [(e, s) for e in events for s in record_schools(e) if moved_out_of(e, s)]
        assert moves, "the simulator's backlog should move a student between schools"
        school = moves[0][1]
        sub_school = await add_subscription(db, school_srv.url + "/school", schools=[school])
        await add_district(db, district.id, district.token, start_from="earliest")

        expected_all = {e["id"] for e in events}
        expected_school = {
            e["id"] for e in events if not record_schools(e) or school in record_schools(e)
        }
        async with running_worker(worker_settings(settings, sim_server.url), redis_url):
            await wait_for(
                lambda: _succeeded_at_least(db, len(expected_all) + len(expected_school)), 60
            )

        assert await scalar(db, select(func.count()).select_from(Event)) == len(expected_all)
        all_bodies = everything.verified(sub_all.secret)
        school_bodies = filtered.verified(sub_school.secret)
        assert {b["id"] for b in all_bodies} == expected_all
        assert {b["id"] for b in school_bodies} == expected_school
        assert moves[0][0]["id"] in {b["id"] for b in school_bodies}
        assert all(b["district"] == district.id for b in all_bodies)
        # the body is the Clever event exactly as sent, plus "district"
        by_id = {e["id"]: e for e in events}
        assert all(
            {k: v for k, v in b.items() if k != "district"} == by_id[b["id"]] for b in all_bodies
        )


def _sim_events(sim: Simulator, district_id: str) -> list[dict[str, Any]]:
    return [json.loads(e.raw) for e in sim.districts[district_id].store.events]


async def _succeeded_at_least(db: Database, n: int) -> bool:
    done = await scalar(
        db, select(func.count()).select_from(Delivery).where(Delivery.status == "succeeded")
    )
    return done >= n
