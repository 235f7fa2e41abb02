"""A failing endpoint is logged once per failure streak, with a summary when it ends, not
once per attempt (issue 14, item 6): through the real pipeline and a real receiver."""

from __future__ import annotations

import logging

import pytest

from relay.db import Database
from relay.delivery.sender import AttemptOutcome
from relay.delivery.streaks import FailureStreaks
from relay.settings import Settings
from tests.support.deliveries import add_deliveries, run_job
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import add_subscription, worker_context

FAILED = AttemptOutcome(status_code=500, duration_ms=3)
OK = AttemptOutcome(status_code=204, duration_ms=3)


def streak_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage().split(":")[0])
        for r in caplog.records
        if r.name == "relay.delivery" and r.getMessage().startswith("endpoint")
    ]


async def test_one_warning_per_streak_then_a_summary(
    db: Database, settings: Settings, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    healthy = False
    receiver = Receiver(responder=lambda n: (204 if healthy else 503, {}, 0.0))
    caplog.set_level(logging.INFO, logger="relay.delivery")
    with serve(receiver.app()) as srv:
        sub = await add_subscription(db, srv.url + "/hook")
        deliveries = await add_deliveries(db, [sub], 12)
        async with worker_context(settings, redis_url) as app:
            for delivery_id in deliveries[:10]:
                assert await run_job(app, delivery_id, 1) == "retrying"
            assert streak_lines(caplog) == [("WARNING", "endpoint failing")]
            [warning] = [r for r in caplog.records if r.getMessage().startswith("endpoint")]
            assert (warning.subscription_id, warning.status_code) == (sub.id, 503)  # type: ignore[attr-defined]
            healthy = True
            assert await run_job(app, deliveries[10], 1) == "succeeded"
            assert await run_job(app, deliveries[11], 1) == "succeeded"
    assert streak_lines(caplog) == [
        ("WARNING", "endpoint failing"),
        ("INFO", "endpoint recovered"),
    ]
    recovered = caplog.records[-1]
    assert recovered.failed_attempts == 10  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage() == "delivery attempt"]


def test_reminders_and_disable_end_a_streak(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    streaks = FailureStreaks(remind_every=100, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="relay.delivery")
    for t in range(0, 250, 10):  # 25 failures over 240 s: the first, then at 100 and 200 s
        now[0] = float(t)
        streaks.attempted("sub_a", t, FAILED)
    assert [m for _, m in streak_lines(caplog)] == ["endpoint failing"] + [
        "endpoint still failing"
    ] * 2
    assert caplog.records[-1].failed_attempts == 21  # type: ignore[attr-defined]
    streaks.disabled("sub_a", "every attempt failed since …")
    assert caplog.records[-1].getMessage() == "endpoint failing streak ended: subscription disabled"
    assert caplog.records[-1].failed_attempts == 25  # type: ignore[attr-defined]
    assert streaks.failing() == 0
    streaks.attempted("sub_b", 1, AttemptOutcome(status_code=410, duration_ms=1))  # 410 disables
    assert [m for _, m in streak_lines(caplog)][-2:] == [
        "endpoint failing",
        "endpoint failing streak ended",
    ]
    assert streaks.failing() == 0
    caplog.clear()
    streaks.attempted("sub_c", 1, OK)  # a success outside a streak says nothing
    assert caplog.records == []
