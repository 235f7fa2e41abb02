"""A district token the workers cannot decrypt (registered through an API replica with another
``RELAY_ENCRYPTION_KEY``) is that district's ``error``, saying so, and nothing else's: the
other district keeps being polled and delivered, the admin sees the district and PATCHes its
token, and it recovers (``relay.polling.poller``). Real processes: ``relay serve`` twice (one
with the other key) and a ``relay worker``.

Before the fix, that district's poller crashed on every lease ("poller crashed; the lease will
expire") while the district showed ``active`` with no error, and listing districts was a 500."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import col, func, select

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database
from relay.db.models import Event
from relay.polling.poller import UNREADABLE_TOKEN
from relay.settings import Settings
from tests.support.cluster import cluster
from tests.support.keys import OTHER_KEY
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import wait_for


async def _stored(db: Database, district_id: str) -> int:
    async with db.read() as session:
        query = select(func.count()).select_from(Event).where(col(Event.district_id) == district_id)
        return int((await session.exec(query)).one())


async def test_an_unreadable_token_is_its_districts_error_until_the_admin_gives_a_new_one(
    db: Database, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    sim = Simulator(SimulatorConfig(districts=2, seed=27))
    good, bad = sim.districts.values()
    receiver = Receiver()
    with (
        serve(create_app(sim)) as clever,
        serve(receiver.app()) as hooks,
        cluster(settings, redis_url, clever.url, tmp_path, workers=1) as relay,
    ):
        sub = relay.subscribe(hooks.url + "/all", record_types=["users", "sections"])
        relay.add_district(good.id, good.token)
        with relay.replica(OTHER_KEY) as replica:
            body = {"id": bad.id, "token": bad.token, "start_from": "earliest"}
            assert replica.post("/v1/districts", json=body).status_code == 201
        sim.generate(good.id, 10)
        sim.generate(bad.id, 10)

        async def in_error() -> bool:
            shown = relay.api.get(f"/v1/districts/{bad.id}")
            assert shown.status_code == 200, shown.text
            return bool(shown.json()["status"] == "error")

        await wait_for(in_error, 30)
        shown = relay.api.get(f"/v1/districts/{bad.id}").json()
        assert shown["last_error"] == UNREADABLE_TOKEN
        assert "token" not in shown
        listed = relay.api.get("/v1/districts")
        assert listed.status_code == 200, listed.text  # was 500
        assert await _stored(db, bad.id) == 0
        told = relay.api.get("/v1/events", params={"type": "relay.district.error"}).json()
        assert [e["record_id"] for e in told["data"]] == [bad.id]

        # the other district never noticed
        await wait_for(lambda: _at_least(db, good.id, 10), 30)
        sim.generate(good.id, 5)
        await wait_for(lambda: _at_least(db, good.id, 15), 30)
        assert relay.api.get(f"/v1/districts/{good.id}").json()["status"] == "active"

        # the admin gives it its token again (through a replica with the workers' key)
        patched = relay.api.patch(f"/v1/districts/{bad.id}", json={"token": bad.token})
        assert patched.status_code == 200, patched.text

        async def recovered() -> bool:
            shown = relay.api.get(f"/v1/districts/{bad.id}").json()
            return shown["status"] == "active" and await _stored(db, bad.id) == 10

        await wait_for(recovered, 60)
        assert relay.api.get(f"/v1/districts/{bad.id}").json()["last_error"] is None
        assert relay.api.delete(f"/v1/districts/{bad.id}").status_code == 204

        worker_log = relay.output()
        assert "poller crashed" not in worker_log
        assert OTHER_KEY not in worker_log
        assert bad.token not in worker_log
    assert sub["id"]


async def _at_least(db: Database, district_id: str, n: int) -> bool:
    return await _stored(db, district_id) >= n
