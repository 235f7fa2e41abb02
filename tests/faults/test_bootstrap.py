"""A consumer that starts late starts whole: a bootstrap sends a new subscription the roster
(one created event per matching record, ``source: "snapshot"``) while live events keep
coming, and an ordered consumer that applies what arrives holds exactly Clever's records;
a filtered bootstrap sends exactly the matching records."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import func
from sqlmodel import col, select

from relay.db.models import Bootstrap, Subscription
from relay.delivery.bootstrap import request_bootstrap
from relay.fanout.matching import Filter
from tests.faults.test_roster_sync import ENV, SMALL, mirror_of, register_for_sync, settled
from tests.support.roster import data_api_records, roster_records
from tests.support.scenario import Hook, Scenario, ScenarioFactory


async def bootstrap(run: Scenario, hook: Hook) -> int:
    async with run.db.write() as session:
        sub = await session.get(Subscription, hook.id)
        assert sub is not None
        return await request_bootstrap(session, sub)


async def bootstraps_done(run: Scenario) -> bool:
    async with run.db.read() as session:
        left = await session.exec(
            select(func.count()).select_from(Bootstrap).where(col(Bootstrap.done).is_(False))
        )
        return int(left.one()) == 0


async def test_a_late_ordered_subscription_bootstraps_to_exactly_the_roster(
    make_scenario: ScenarioFactory,
) -> None:
    with make_scenario(seed=11, env=ENV, sim_config=SMALL) as run:
        district_id = await register_for_sync(run)
        run.start_worker()
        await run.wait("the first sync", lambda: settled(run, district_id), 60)
        run.set_event_rate(5)  # live events while the snapshots go out
        await asyncio.sleep(1)
        late = await run.hook("late", ordered=True)
        school = next(iter(run.sim.districts[district_id].roster.school_ids()))
        narrow = await run.hook("narrow", schools=[school], roles=["student"])
        sent = await bootstrap(run, late)
        assert sent > 0
        await asyncio.sleep(2)
        run.quiesce_clever()
        await run.wait("the bootstraps", lambda: bootstraps_done(run), 60)
        await run.wait("every delivery", lambda: settled(run, district_id), 60)
        token = run.sim.districts[district_id].token
        records = await asyncio.to_thread(data_api_records, run.clever_url, token)
        assert await roster_records(run.db, district_id) == records
        assert mirror_of(late).records == records

        # a filtered bootstrap, with nothing else happening: exactly the matching records
        assert narrow.receiver is not None
        narrow.receiver.received.clear()
        wanted = Filter(schools=frozenset({school}), roles=frozenset({"student"}))
        expected = {
            key
            for key, record in records.items()
            if wanted.matches(
                {"type": f"{key[0]}.created", "data": {"object": record}}, district_id
            )
        }
        assert await bootstrap(run, narrow) == len(expected)
        await run.wait("the filtered bootstrap", lambda: bootstraps_done(run), 60)
        await run.wait("its deliveries", lambda: settled(run, district_id), 60)
        bodies = [json.loads(r.body) for r in narrow.receiver.received]
        assert {b["source"] for b in bodies} == {"snapshot"}
        assert {(b["type"].split(".")[0], b["data"]["object"]["id"]) for b in bodies} == expected
        assert len(bodies) == len(expected)  # one each
