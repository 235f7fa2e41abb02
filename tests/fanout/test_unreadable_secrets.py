"""Issue 26, item 1, end to end as real processes (``relay serve``, ``relay worker``, a second
``relay serve`` with another ``RELAY_ENCRYPTION_KEY``): a subscription whose secret the
workers cannot decrypt stops nothing else. Both districts' events keep being stored and
delivered; the bad subscription is disabled saying why, its owner is told, and it stays
visible and fixable through the API.

Before the fix, fan-out loaded every enabled subscription whole, the secret decrypted on load,
and the poller of every district crashed on it: nothing was stored at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col, select

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database
from relay.db.models import Delivery, Event
from relay.delivery.record import UNREADABLE_SECRET
from relay.delivery.signing import generate_secret
from relay.settings import Settings
from tests.support.api import service_client
from tests.support.cluster import cluster
from tests.support.config import ENCRYPTION_KEY
from tests.support.keys import OTHER_KEY
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import wait_for


def _ids(receiver: Receiver, secret: str) -> set[str]:
    """The event ids ``receiver`` got, every request verified with ``secret``."""
    return {str(body["id"]) for body in receiver.verified(secret)}


async def _stored(db: Database, district_ids: list[str]) -> set[str]:
    async with db.read() as session:
        rows = await session.exec(select(Event.id).where(col(Event.district_id).in_(district_ids)))
        return set(rows.all())


async def _deliveries_of(db: Database, subscription_id: str) -> set[str]:
    async with db.read() as session:
        rows = await session.exec(
            select(Delivery.event_id).where(col(Delivery.subscription_id) == subscription_id)
        )
        return set(rows.all())


def _created(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_secret_no_worker_can_read_stops_nothing_else_and_stays_fixable(
    db: Database, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    sim = Simulator(SimulatorConfig(districts=2, seed=26))
    d1, d2 = sim.districts.values()
    everything, wrong_key, ops = Receiver(), Receiver(), Receiver()
    with (
        serve(create_app(sim)) as clever,
        serve(everything.app()) as all_srv,
        serve(wrong_key.app()) as bad_srv,
        serve(ops.app()) as ops_srv,
        cluster(settings, redis_url, clever.url, tmp_path, workers=1) as relay,
    ):
        team = service_client(relay.api, "team")
        good = relay.subscribe(all_srv.url + "/all")
        told = _created(team, {"url": ops_srv.url + "/ops", "record_types": ["relay"]})
        with relay.replica(OTHER_KEY) as replica:  # a replica with a key the workers lack
            bad = _created(replica, {"url": bad_srv.url + "/bad", "owner": "team"})
            spare = _created(replica, {"url": bad_srv.url + "/spare", "owner": "team"})
        for district in (d1, d2):
            relay.add_district(district.id, district.token)
            sim.generate(district.id, 10)

        # 1. intake goes on: both districts' events stored, and delivered to the others
        async def all_delivered() -> bool:
            stored = await _stored(db, [d1.id, d2.id])
            return len(stored) == 20 and _ids(everything, good["secret"]) == stored

        await wait_for(all_delivered, 60)

        # 2. the bad one is its own problem: disabled saying why, its owner told
        async def disabled() -> bool:
            shown = team.get(f"/v1/subscriptions/{bad['id']}")
            assert shown.status_code == 200, shown.text  # was 500
            return shown.json()["enabled"] is False

        await wait_for(disabled, 30)
        shown = team.get(f"/v1/subscriptions/{bad['id']}").json()
        assert shown["disabled_reason"] == UNREADABLE_SECRET
        assert "secret" not in shown
        listed = team.get("/v1/subscriptions")
        assert listed.status_code == 200, listed.text
        assert {bad["id"], spare["id"]} <= {s["id"] for s in listed.json()["data"]}

        async def owner_told() -> bool:
            return any(
                b["type"] == "relay.subscription.disabled"
                and b["data"]["object"]["id"] == bad["id"]
                for b in ops.verified(told["secret"])
            )

        await wait_for(owner_told, 30)
        assert [r.path for r in wrong_key.received if r.path == "/bad"] == []  # nothing unsigned

        # 3. a worker started now names what its keys do not read, and starts all the same
        late = relay.start_worker()
        await wait_for(lambda: _logged(late.output(), "do not decrypt"), 30)
        line = next(x for x in late.output().splitlines() if "do not decrypt" in x)
        assert f"subscription {bad['id']} (secret)" in line
        assert OTHER_KEY not in late.output()
        assert ENCRYPTION_KEY not in late.output()
        assert late.proc.poll() is None

        # 4. still flowing, with two workers now
        for district in (d1, d2):
            sim.generate(district.id, 5)

        async def more_delivered() -> bool:
            stored = await _stored(db, [d1.id, d2.id])
            return len(stored) == 30 and _ids(everything, good["secret"]) == stored

        await wait_for(more_delivered, 60)

        # 5. its owner fixes it through the API: a new secret, enabled again; what it missed
        # while parked goes out, signed with the new secret
        secret = generate_secret()
        fixed = team.patch(
            f"/v1/subscriptions/{bad['id']}", json={"secret": secret, "enabled": True}
        )
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["enabled"] is True
        assert "secret" not in fixed.json()
        owed = await _deliveries_of(db, bad["id"])
        assert owed

        async def caught_up() -> bool:
            return {r.path for r in wrong_key.received} == {"/bad"} and _ids(
                wrong_key, secret
            ) == owed

        await wait_for(caught_up, 60)

        # 6. the other one: changed, rotated and deleted like any subscription
        patched = team.patch(f"/v1/subscriptions/{spare['id']}", json={"description": "mine"})
        assert patched.status_code == 200, patched.text
        rotated = team.post(f"/v1/subscriptions/{spare['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["secret"].startswith("whsec_")
        assert team.delete(f"/v1/subscriptions/{spare['id']}").status_code == 204
        assert team.get(f"/v1/subscriptions/{spare['id']}").status_code == 404


async def _logged(output: str, text: str) -> bool:
    return text in output
