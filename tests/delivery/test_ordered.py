"""Ordered delivery as real processes: ``relay serve`` and two ``relay worker`` subprocesses,
the Clever simulator and a receiver on 127.0.0.1. A burst of roster changes (60 students,
each created, updated three times and deleted) to a receiver that answers in 15 ms and fails
the first attempt of every fifth event: the ordered subscription gets every record's events
in Clever's order, each only after the previous one was answered 2xx; the unordered control
on the same receiver shows that the burst does scramble them otherwise."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.settings import Settings
from tests.support.cluster import cluster, statuses
from tests.support.ordering import (
    TimingReceiver,
    every_fifth,
    order_report,
    script_burst,
    when,
)
from tests.support.redis_server import REDIS_SERVER, PrivateRedis
from tests.support.servers import ServerThread, serve
from tests.support.worker import wait_for

RECORDS = 60


async def _run_burst(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
    disrupt: str | None = None,
    private_redis: PrivateRedis | None = None,
) -> tuple[TimingReceiver, dict[str, list[str]]]:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    chains = script_burst(sim, district.id, RECORDS)
    receiver = TimingReceiver(latency=0.015, fail_first=every_fifth(chains))
    events = sum(len(c) for c in chains.values())
    with (
        serve(receiver.app()) as srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        relay.subscribe(srv.url + "/ordered", ordered=True)
        relay.subscribe(srv.url + "/unordered")
        relay.add_district(district.id, district.token)
        if disrupt is not None:
            await wait_for(when(lambda: len(receiver.succeeded("/ordered")) >= 60), 30)
            if disrupt == "kill":
                relay.workers[0].kill()
            else:
                assert private_redis is not None
                private_redis.flushall()
        await relay.settled(db, 2 * events, 60)
        await asyncio.sleep(0.3)
    assert await statuses(db) == {"succeeded": 2 * events}  # nothing lost, nothing stuck
    for path in ("/ordered", "/unordered"):
        assert receiver.succeeded(path) == {e for c in chains.values() for e in c}
    return receiver, chains


async def test_a_burst_arrives_in_order_per_record_with_two_workers(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    receiver, chains = await _run_burst(db, settings, redis_url, simulator, tmp_path)
    ordered = order_report(receiver.requests("/ordered"), chains)
    unordered = order_report(receiver.requests("/unordered"), chains)
    print(f"ordered: {ordered}; unordered control: {unordered}")
    assert (ordered.out_of_order, ordered.early) == (0, 0), ordered
    # the control: without ordering, the same burst scrambles records (the test can fail)
    assert unordered.out_of_order > 0, unordered
    assert unordered.early > 0, unordered


async def test_a_worker_sigkilled_mid_burst_loses_and_reorders_nothing(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    receiver, chains = await _run_burst(
        db, settings, redis_url, simulator, tmp_path, disrupt="kill"
    )
    ordered = order_report(receiver.requests("/ordered"), chains)
    print(f"ordered after a SIGKILL: {ordered}")
    assert (ordered.out_of_order, ordered.early) == (0, 0), ordered


@pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server on PATH")
async def test_a_redis_flush_mid_burst_loses_and_reorders_nothing(
    db: Database,
    settings: Settings,
    private_redis: PrivateRedis,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    receiver, chains = await _run_burst(
        db,
        settings,
        private_redis.url,
        simulator,
        tmp_path,
        disrupt="flush",
        private_redis=private_redis,
    )
    ordered = order_report(receiver.requests("/ordered"), chains)
    print(f"ordered after a Redis flush: {ordered}")
    assert (ordered.out_of_order, ordered.early) == (0, 0), ordered


async def test_a_failing_record_holds_back_that_record_and_nothing_else(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    chains = script_burst(sim, district.id, 20)
    stuck = sorted(chains)[7]
    receiver = TimingReceiver(latency=0.005, failing_records={stuck})
    others = {e for record, chain in chains.items() if record != stuck for e in chain}
    with (
        serve(receiver.app()) as srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        relay.subscribe(srv.url + "/ordered", ordered=True)
        relay.add_district(district.id, district.token)
        await wait_for(when(lambda: receiver.succeeded("/ordered") >= others), 30)
        # every other record is through; the failing one has sent only its first event
        sent = {a.event_id for a in receiver.requests("/ordered") if a.record_id == stuck}
        assert sent == {chains[stuck][0]}
        listed = relay.api.get("/v1/deliveries", params={"status": "pending"}).json()["data"]
        waiting = [d for d in listed if d["waiting_for"] is not None]
        assert len(waiting) == len(chains[stuck]) - 1
        assert all(d["next_attempt_at"] is None for d in waiting)
        # its schedule ends (RELAY_RETRY_SCHEDULE 0.5,0.5,1: four attempts each), one event
        # after the other, and the record's chain is not stranded
        await relay.settled(db, sum(len(c) for c in chains.values()), 60)
    assert await statuses(db) == {"succeeded": len(others), "failed": len(chains[stuck])}
    order = [a.event_id for a in receiver.requests("/ordered") if a.record_id == stuck]
    assert list(dict.fromkeys(order)) == chains[stuck]  # each in turn, in Clever's order
