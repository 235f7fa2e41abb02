"""``GET /v1/subscriptions/{id}/stats``: attempts made through the real pipeline (a receiver on
127.0.0.1), read back through the API."""

from __future__ import annotations

import statistics

import httpx
from sqlmodel import col, select

from relay.db import Database
from relay.db.models import DURATION_BOUNDS_MS, DeliveryAttempt
from relay.settings import Settings
from tests.support.api import service_client
from tests.support.deliveries import add_deliveries, run_job
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import add_subscription, worker_context, worker_settings


async def test_stats_count_what_the_pipeline_recorded(
    db: Database, settings: Settings, redis_url: str, admin: httpx.Client
) -> None:
    receiver = Receiver(responder=lambda n: (204, {}, 0.0) if n < 7 else (500, {}, 0.03))
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url)
        other = await add_subscription(db, srv.url)
        ids = await add_deliveries(db, [sub], 10)
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            for delivery_id in ids:
                await run_job(app, delivery_id, 1)
    stats = admin.get(f"/v1/subscriptions/{sub.id}/stats", params={"window": "1h"}).json()
    assert {k: stats[k] for k in ("attempts", "succeeded", "failed", "pending")} == {
        "attempts": 10,
        "succeeded": 7,
        "failed": 3,
        "pending": 3,  # retrying
    }
    assert stats["success_rate"] == 0.7
    assert stats["deliveries_failed"] == 0
    assert stats["window"] == "1h"
    assert stats["last_success_at"] is not None
    assert stats["last_failure_at"] >= stats["last_success_at"]
    async with db.read() as session:
        durations = sorted(
            (
                await session.exec(
                    select(DeliveryAttempt.duration_ms).order_by(col(DeliveryAttempt.id))
                )
            ).all()
        )
    # the estimate lies in the histogram bucket of the true median
    true_median = statistics.median(durations)
    bucket = next(i for i, b in enumerate(DURATION_BOUNDS_MS) if true_median <= b)
    lower = (0, *DURATION_BOUNDS_MS)[bucket]
    assert lower <= stats["p50_ms"] <= DURATION_BOUNDS_MS[bucket], (durations, stats)
    assert stats["p95_ms"] >= stats["p50_ms"]
    # the default window is a day; another subscription has nothing
    assert admin.get(f"/v1/subscriptions/{sub.id}/stats").json()["attempts"] == 10
    empty = admin.get(f"/v1/subscriptions/{other.id}/stats").json()
    assert empty["attempts"] == 0
    assert empty["success_rate"] is None
    assert empty["p50_ms"] is None


def test_stats_are_owner_scoped_and_the_window_is_checked(admin: httpx.Client) -> None:
    created = admin.post(
        "/v1/subscriptions", json={"url": "http://10.0.0.1/hook", "owner": "team-a"}
    ).json()
    bad = admin.get(f"/v1/subscriptions/{created['id']}/stats", params={"window": "1y"})
    assert bad.status_code == 422
    assert "window: expected one of 1h, 24h, 7d" in bad.json()["error"]["message"]
    with service_client(admin, "team-b") as team_b:
        assert team_b.get(f"/v1/subscriptions/{created['id']}/stats").status_code == 404
    with service_client(admin, "team-a") as team_a:
        assert team_a.get(f"/v1/subscriptions/{created['id']}/stats").status_code == 200
