"""``/metrics``: the deployment gauges of ``relay serve`` (from the database and Redis), and the
counters each worker process serves on ``RELAY_METRICS_PORT`` (real processes)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from relay.api.app import create_app
from relay.clever.simulator import Simulator
from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryStatus, District, Subscription
from relay.db.retention import purge_expired
from relay.queue import Job, RedisQueue, open_redis
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.cluster import cluster
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, free_port, serve
from tests.support.worker import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


INGESTED = ("relay_events_ingested_total", ())


async def scrape_when(url: str, ready: Callable[[Samples], bool]) -> Samples:
    """A scrape once ``ready`` holds: polling's counters reach the worker's registry from
    its polling process a moment after the work (workers/polling.py)."""
    samples = scrape(url)

    async def check() -> bool:
        nonlocal samples
        samples = scrape(url)
        return ready(samples)

    await wait_for(check, 30)
    return samples


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


async def seed(db: Database) -> None:
    now = utcnow()
    async with db.write() as session:
        session.add(
            District(
                id="d1",
                token="t",
                cursor="6b0000000000000000000002",
                last_polled_at=now,
                caught_up=True,
            )
        )
        session.add(
            Subscription(id="sub_a", owner="o", url="http://x/", secret="s", failing_since=now)
        )
        session.add(Subscription(id="sub_b", owner="o", url="http://x/", secret="s", enabled=False))
        rows = [
            (DeliveryStatus.SUCCEEDED, None),
            (DeliveryStatus.PENDING, now - timedelta(minutes=5)),  # overdue
            (DeliveryStatus.PENDING, now),
            (DeliveryStatus.RETRYING, now + timedelta(minutes=5)),
            (DeliveryStatus.FAILED, None),
            (DeliveryStatus.FAILED, None),
        ]
        for n, (status, next_at) in enumerate(rows):
            session.add(
                Delivery(
                    subscription_id="sub_a",
                    event_id=f"6b00000000000000000000{n:02d}",
                    event_type="users.updated",
                    status=status,
                    next_attempt_at=next_at,
                )
            )


async def test_serve_gauges_read_the_database_and_redis(
    db: Database, settings: Settings, runtime: RuntimeSecrets, redis_url: str
) -> None:
    await seed(db)
    pool = await open_redis(redis_url)
    try:
        await RedisQueue(pool).enqueue([Job(1, 1), Job(2, 2, utcnow() + timedelta(hours=1))])
        with serve(create_app(settings, runtime, redis_url=redis_url)) as api:
            samples = scrape(f"{api.url}/metrics")
    finally:
        await pool.aclose()
    assert samples[("relay_deliveries_waiting", (("status", "pending"),))] == 2
    assert samples[("relay_deliveries_waiting", (("status", "retrying"),))] == 1
    assert samples[("relay_deliveries_overdue", ())] == 1
    assert samples[("relay_deliveries_failed", ())] == 2
    assert samples[("relay_subscriptions_failing", ())] == 1
    assert samples[("relay_subscriptions_disabled", ())] == 1
    assert ("relay_district_lag_seconds", (("district", "d1"),)) in samples
    assert samples[("relay_district_status", (("district", "d1"), ("status", "active")))] == 1
    due = ("relay_queue_jobs", (("queue", "relay:deliveries"), ("state", "due")))
    later = ("relay_queue_jobs", (("queue", "relay:retries"), ("state", "scheduled")))
    assert samples[due] == 1
    assert samples[later] == 1
    # counters belong to the workers: relay serve shows none
    assert not any(name.startswith("relay_delivery_attempts") for name, _ in samples)


def _attempts(samples: Samples, result: str) -> float:
    return samples.get(("relay_delivery_attempts_total", (("result", result),)), 0.0)


async def test_worker_counters_rise_and_survive_a_retention_purge(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 30)
    receiver = Receiver()
    port = free_port()
    with (
        serve(receiver.app()) as srv,
        cluster(settings, redis_url, sim_server.url, tmp_path, workers=0) as relay,
    ):
        relay.env["RELAY_METRICS_PORT"] = str(port)
        relay.start_worker()
        worker = f"http://127.0.0.1:{port}/metrics"
        relay.subscribe(srv.url + "/hook")
        relay.add_district(district.id, district.token)

        await relay.settled(db, 30, 60)
        first = scrape(worker)
        assert _attempts(first, "succeeded") == 30
        httpx.post(
            f"{sim_server.url}/_sim/districts/{district.id}/events", json={"generate": 20}
        ).raise_for_status()
        await relay.settled(db, 50, 60)
        second = await scrape_when(worker, lambda m: m.get(INGESTED, 0) >= 50)
        assert _attempts(second, "succeeded") == 50
        assert second[INGESTED] == 50
        assert second[("relay_clever_requests_total", (("status", "200"),))] >= 1
        assert _attempts(second, "http_error") == 0  # exported before the first one

        purged = await purge_expired(db, retention_days=1e-9, batch=1000)
        assert purged >= 100, "the purge deleted the deliveries and events"
        after = scrape(worker)
        assert _attempts(after, "succeeded") == 50
        assert after[("relay_events_ingested_total", ())] == 50
