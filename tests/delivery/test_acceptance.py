"""Issue 4's acceptance as real processes: the Clever simulator (uvicorn thread), ``relay
serve`` and two ``relay worker`` subprocesses, receivers on 127.0.0.1, and subscriptions and
districts created through the REST API."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from sqlalchemy import func
from sqlmodel import col, select

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.db.models import Delivery, DeliveryAttempt
from relay.fanout.matching import record_schools
from relay.settings import Settings
from tests.support.cluster import (
    cluster,
    count,
    deliveries_settled,
    duplicates,
    statuses,
)
from tests.support.events import moved_out_of, sim_events
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, serve
from tests.support.worker import wait_for

MAX_IN_FLIGHT = 8  # a subscription's default max_in_flight


async def test_two_workers_deliver_each_event_to_exactly_the_subscriptions_it_matches(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 300)
    events = sim_events(sim, district.id)
    moves = [(e, s) for e in events for s in record_schools(e) if moved_out_of(e, s)]
    assert moves, "the simulator's backlog should move a student between schools"
    moved, school = moves[0]
    expected_all = {e["id"] for e in events}
    expected_school = {
        e["id"] for e in events if not record_schools(e) or school in record_schools(e)
    }
    assert len(expected_school) < len(expected_all)

    everything, filtered = Receiver(), Receiver()
    with (
        serve(everything.app()) as all_srv,
        serve(filtered.app()) as school_srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        sub_all = relay.subscribe(all_srv.url + "/all")
        sub_school = relay.subscribe(school_srv.url + "/school", schools=[school])
        relay.add_district(district.id, district.token)
        expected = len(expected_all) + len(expected_school)
        await wait_for(lambda: deliveries_settled(db, expected), 60)
        await asyncio.sleep(0.5)  # let a straggling duplicate land before counting

    assert await statuses(db) == {"succeeded": expected}, relay.output()
    all_bodies = everything.verified(sub_all["secret"])  # raises unless every one verifies
    school_bodies = filtered.verified(sub_school["secret"])
    assert {b["id"] for b in all_bodies} == expected_all
    assert {b["id"] for b in school_bodies} == expected_school
    assert moved["id"] in {b["id"] for b in school_bodies}  # moved out of the school
    assert all(b["district"] == district.id for b in all_bodies + school_bodies)
    assert {r.headers["webhook-id"] for r in everything.received} == expected_all
    # one attempt each; no failure, so no duplicate
    assert duplicates(everything) == duplicates(filtered) == 0
    attempts = await count(db, select(func.count()).select_from(DeliveryAttempt))
    assert attempts == expected


async def test_a_flaky_receiver_succeeds_on_attempt_4_and_410_disables(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 5)
    expected_ids = {e["id"] for e in sim_events(sim, district.id)}

    flaky, gone = Receiver(), Receiver(responder=lambda n: (410, {}, 0.0))
    seen: collections.Counter[str] = collections.Counter()

    def fail_three_times(n: int) -> tuple[int, dict[str, str], float]:
        with flaky.lock:
            webhook_id = flaky.received[n].headers["webhook-id"]
        seen[webhook_id] += 1
        return (503 if seen[webhook_id] <= 3 else 204), {}, 0.0

    flaky.responder = fail_three_times
    with (
        serve(flaky.app()) as flaky_srv,
        serve(gone.app()) as gone_srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        sub_flaky = relay.subscribe(flaky_srv.url + "/flaky", record_types=[])
        sub_gone = relay.subscribe(gone_srv.url + "/gone")
        relay.add_district(district.id, district.token)

        async def flaky_done() -> bool:
            query = (
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.subscription_id == sub_flaky["id"])
                .where(Delivery.status == "succeeded")
            )
            return await count(db, query) == len(expected_ids)

        await wait_for(flaky_done, 45)
        shown = relay.api.get(f"/v1/subscriptions/{sub_gone['id']}").json()
        async with db.read() as session:
            first = (
                await session.exec(
                    select(Delivery.id).where(Delivery.subscription_id == sub_flaky["id"])
                )
            ).first()
        via_api = relay.api.get(f"/v1/deliveries/{first}")

    async with db.read() as session:
        rows = (
            await session.exec(select(Delivery).where(Delivery.subscription_id == sub_flaky["id"]))
        ).all()
        for delivery in rows:
            attempts = (
                await session.exec(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.delivery_id == delivery.id)
                    .order_by(col(DeliveryAttempt.id))
                )
            ).all()
            assert delivery.attempts == 4
            assert len(attempts) == 4
            assert [a.status_code for a in attempts] == [503, 503, 503, 204]
    assert {i for i, n in seen.items() if n == 4} == expected_ids
    if via_api.status_code == 200:  # the delivery log API, where this build has it
        shown_delivery = via_api.json()
        assert shown_delivery["status"] == "succeeded"
        assert [a["status_code"] for a in shown_delivery["attempts"]] == [503, 503, 503, 204]
    assert len(flaky.verified(sub_flaky["secret"])) == 4 * len(expected_ids)

    assert shown["enabled"] is False, shown
    assert "410" in shown["disabled_reason"]
    gone_received = len(gone.event_ids())
    # one 410 disables; only attempts already in flight when it did could reach the endpoint
    assert 1 <= gone_received <= len(expected_ids)


async def test_a_worker_killed_mid_run_loses_nothing(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 200)
    expected_ids = {e["id"] for e in sim_events(sim, district.id)}
    slow = Receiver(responder=lambda n: (204, {}, 0.2))
    with (
        serve(slow.app()) as srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        relay.subscribe(srv.url + "/slow")
        relay.add_district(district.id, district.token)

        async def some_received() -> bool:
            return len(slow.event_ids()) >= 40

        await wait_for(some_received, 30)
        relay.workers[0].kill()
        killed_at = len(slow.event_ids())
        await relay.settled(db, len(expected_ids), 50, len(slow.event_ids()))
        await asyncio.sleep(0.5)

    received = slow.event_ids()
    assert set(received) == expected_ids
    assert await statuses(db) == {"succeeded": len(expected_ids)}
    dupes = duplicates(slow)
    # a duplicate is an attempt the killed worker had sent but not recorded: up to
    # MAX_IN_FLIGHT in flight, plus those that had been answered and were
    # waiting for the write transaction (recording takes milliseconds, this receiver 0.2 s,
    # so at most one more wave)
    assert dupes <= 2 * MAX_IN_FLIGHT, (dupes, killed_at)
    print(f"killed after {killed_at} received; {len(received)} requests, {dupes} duplicates")
