from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from relay.db import Database, utcnow
from relay.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    District,
    Event,
    Subscription,
)


def seed(database_url: str) -> None:
    async def run() -> None:
        db = Database(database_url)
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
            for n, kind in enumerate(["users.updated", "users.updated", "sections.created"]):
                session.add(
                    Event(
                        id=f"6b000000000000000000000{n}",
                        district_id="d1",
                        type=kind,
                        created=now,
                        body="{}",
                    )
                )
            session.add(
                Delivery(
                    id=1,
                    subscription_id="sub_a",
                    event_id="6b0000000000000000000000",
                    event_type="users.updated",
                    status=DeliveryStatus.SUCCEEDED,
                )
            )
            session.add(
                Delivery(
                    id=2,
                    subscription_id="sub_a",
                    event_id="6b0000000000000000000001",
                    event_type="users.updated",
                    status=DeliveryStatus.PENDING,
                    next_attempt_at=now - timedelta(minutes=5),
                )
            )
            for ms in (20, 300, 7000):
                session.add(
                    DeliveryAttempt(
                        delivery_id=1, attempted_at=now, status_code=200, duration_ms=ms
                    )
                )
        await db.dispose()

    asyncio.run(run())


def test_metrics_reflect_the_database(anonymous: httpx.Client, database_url: str) -> None:
    seed(database_url)
    response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert (
        samples[("relay_events_ingested_total", (("district", "d1"), ("type", "users.updated")))]
        == 2
    )
    assert samples[("relay_deliveries", (("status", "succeeded"),))] == 1
    assert samples[("relay_deliveries", (("status", "failed"),))] == 0
    assert samples[("relay_deliveries_overdue", ())] == 1
    assert samples[("relay_delivery_attempt_duration_milliseconds_count", ())] == 3
    assert samples[("relay_delivery_attempt_duration_milliseconds_bucket", (("le", "500"),))] == 2
    assert samples[("relay_subscriptions_failing", ())] == 1
    assert ("relay_district_lag_seconds", (("district", "d1"),)) in samples
    assert samples[("relay_district_status", (("district", "d1"), ("status", "active")))] == 1
