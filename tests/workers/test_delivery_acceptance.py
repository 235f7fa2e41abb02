"""Issue 4's acceptance as real processes: the Clever simulator (uvicorn thread), ``relay
serve`` and two ``relay worker`` subprocesses, receivers on 127.0.0.1, and subscriptions and
districts created through the REST API."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import col, select

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.db.models import Delivery, DeliveryAttempt
from relay.matching import record_schools
from relay.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.processes import RelayProcess
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, free_port, serve
from tests.workers.conftest import wait_for
from tests.workers.test_pipeline import moved_out_of
from workers.context import PER_SUBSCRIPTION_CONCURRENCY

FAST = {
    "RELAY_POLL_INTERVAL": "0.2",
    "RELAY_POLL_LEASE": "3",
    "RELAY_RETRY_SCHEDULE": "0.5,0.5,1",
    "RELAY_DELIVERY_TIMEOUT": "2",
    "RELAY_RECONCILE_INTERVAL": "2",
}


@dataclass
class Cluster:
    """``relay serve`` plus workers; ``api`` is an admin client for the served API."""

    env: dict[str, str]
    logs: Path
    api: httpx.Client
    workers: list[RelayProcess] = field(default_factory=list)

    def start_worker(self) -> RelayProcess:
        log = self.logs / f"worker-{len(self.workers)}.log"
        worker = RelayProcess(["worker"], self.env, log)
        self.workers.append(worker)
        return worker

    def subscribe(self, url: str, **filters: Any) -> dict[str, Any]:
        response = self.api.post("/v1/subscriptions", json={"url": url, **filters})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def add_district(self, district_id: str, token: str) -> None:
        body = {"id": district_id, "token": token, "start_from": "earliest"}
        response = self.api.post("/v1/districts", json=body)
        assert response.status_code == 201, response.text

    def output(self) -> str:
        return "\n".join(w.output()[-3000:] for w in self.workers)


@contextmanager
def cluster(
    settings: Settings, redis_url: str, clever_url: str, logs: Path, workers: int = 2
) -> Iterator[Cluster]:
    env = FAST | {
        "RELAY_DATABASE_URL": settings.database_url,
        "RELAY_REDIS_URL": redis_url,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_SECRET_KEY": "test-secret-key",
        "RELAY_DATA_DIR": str(logs / "data"),
        "RELAY_CLEVER_API_URL": clever_url,
        "RELAY_LOG_LEVEL": "INFO",
    }
    port = free_port()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with ExitStack() as stack:
        api = RelayProcess(["serve", "--port", str(port)], env, logs / "serve.log")
        stack.callback(api.stop)
        client = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)
        )
        _wait_until_serving(client, api)
        running = Cluster(env, logs, client)
        for _ in range(workers):
            running.start_worker()
        try:
            yield running
        finally:
            for worker in running.workers:
                worker.stop()


def _wait_until_serving(client: httpx.Client, api: RelayProcess) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert api.proc.poll() is None, api.output()
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("relay serve did not start: " + api.output())


async def count(db: Database, query: Any) -> int:
    async with db.read() as session:
        return int((await session.exec(query)).one())


async def deliveries_settled(db: Database, expected: int) -> bool:
    """Every expected delivery exists and none is still waiting."""
    total = await count(db, select(func.count()).select_from(Delivery))
    waiting = await count(
        db,
        select(func.count())
        .select_from(Delivery)
        .where(col(Delivery.status).in_(["pending", "retrying"])),
    )
    return total >= expected and waiting == 0


async def statuses(db: Database) -> dict[str, int]:
    async with db.read() as session:
        rows = (
            await session.exec(select(Delivery.status, func.count()).group_by(Delivery.status))
        ).all()
    return {str(s): int(n) for s, n in rows}


def sim_events(sim: Simulator, district_id: str) -> list[dict[str, Any]]:
    return [json.loads(e.raw) for e in sim.districts[district_id].store.events]


def duplicates(receiver: Receiver) -> int:
    ids = receiver.event_ids()
    return len(ids) - len(set(ids))


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
        try:
            await wait_for(lambda: deliveries_settled(db, len(expected_ids)), 50)
        except AssertionError:
            raise AssertionError(
                (await statuses(db), len(slow.event_ids()), relay.output())
            ) from None
        await asyncio.sleep(0.5)

    received = slow.event_ids()
    assert set(received) == expected_ids
    assert await statuses(db) == {"succeeded": len(expected_ids)}
    dupes = duplicates(slow)
    # a duplicate is an attempt the killed worker had sent but not recorded: up to
    # PER_SUBSCRIPTION_CONCURRENCY in flight, plus those that had been answered and were
    # waiting for the write transaction (recording takes milliseconds, this receiver 0.2 s,
    # so at most one more wave)
    assert dupes <= 2 * PER_SUBSCRIPTION_CONCURRENCY, (dupes, killed_at)
    print(f"killed after {killed_at} received; {len(received)} requests, {dupes} duplicates")
