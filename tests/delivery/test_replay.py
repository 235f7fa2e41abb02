"""Replay as real processes (``relay serve``, two workers, the simulator, a receiver): a
subscription created after 400 events were stored gets all of them, once, signed; a second
replay of the first half of the window by ``created`` sends exactly that half again."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import select

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.db.models import Event
from relay.settings import Settings
from tests.support.cluster import cluster, count
from tests.support.events import sim_events
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, serve
from tests.support.worker import wait_for

EVENTS = 400


def _created(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["created"]).replace("Z", "+00:00")).astimezone(UTC)


async def test_replay_sends_stored_history_to_a_new_subscription_and_a_half_again(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, EVENTS, span=3600)
    history = sorted(sim_events(sim, district.id), key=lambda e: (_created(e), e["id"]))
    receiver = Receiver()
    with (
        serve(receiver.app()) as srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        relay.add_district(district.id, district.token)  # stored, delivered to nobody yet
        stored = select(func.count()).select_from(Event)
        await wait_for(lambda: _at_least(db, stored, EVENTS), 30)
        sub = relay.subscribe(srv.url + "/late")
        since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        response = relay.api.post(f"/v1/subscriptions/{sub['id']}/replay", json={"since": since})
        assert (response.status_code, response.json()) == (202, {"requeued": EVENTS})
        await wait_for(lambda: _received(receiver, EVENTS), 60)
        # the first half by created time, both ends included
        cutoff = _created(history[EVENTS // 2 - 1])
        half = {e["id"] for e in history if _created(e) <= cutoff}
        window = {"since": since, "until": cutoff.isoformat()}
        response = relay.api.post(f"/v1/subscriptions/{sub['id']}/replay", json=window)
        assert (response.status_code, response.json()) == (202, {"requeued": len(half)})
        await wait_for(lambda: _received(receiver, EVENTS + len(half)), 60)
        await wait_for(lambda: _settled(relay.api, sub["id"]), 30)
    received = collections.Counter(receiver.event_ids())
    assert set(received) == {e["id"] for e in history}
    assert {e for e, n in received.items() if n == 2} == half
    assert max(received.values()) == 2
    verified = receiver.verified(sub["secret"])  # raises if one does not verify
    assert len(verified) == EVENTS + len(half)


async def _at_least(db: Database, query: Any, n: int) -> bool:
    return await count(db, query) >= n


async def _received(receiver: Receiver, n: int) -> bool:
    return len(receiver.event_ids()) >= n


async def _settled(api: httpx.Client, subscription_id: str) -> bool:
    params = {"subscription_id": subscription_id, "status": "pending,retrying"}
    return api.get("/v1/deliveries", params=params).json()["data"] == []
