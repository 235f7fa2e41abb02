"""outcomes: the state after an attempt, the compare-and-set that records it once, and the
subscription's health (410 and sustained failure disable it; a success resets the streak)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import select

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, Subscription
from relay.delivery.attempt import Attempt
from relay.delivery.outcome import next_state
from relay.delivery.record import record_attempts
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import AttemptOutcome
from relay.queue import Job

SCHEDULE = RetrySchedule.parse("10,20")
NOW = datetime(2024, 5, 1, 12, 0, 0).astimezone()

OK = AttemptOutcome(status_code=204, duration_ms=3)
FAIL = AttemptOutcome(status_code=500, duration_ms=3, error="http 500")
GONE = AttemptOutcome(status_code=410, duration_ms=3, error="http 410")
TIMEOUT = AttemptOutcome(status_code=None, duration_ms=2000, error="timeout: no response")


def busy(status: int, retry_after: str) -> AttemptOutcome:
    return AttemptOutcome(status, 1, error=f"http {status}", retry_after=retry_after)


def delay_of(outcome: AttemptOutcome, attempt: int = 1) -> float:
    status, at = next_state(outcome, attempt, SCHEDULE, NOW)
    assert status == DeliveryStatus.RETRYING
    assert at is not None
    return (at - NOW).total_seconds()


def test_success_and_gone_are_final() -> None:
    assert next_state(OK, 1, SCHEDULE, NOW) == (DeliveryStatus.SUCCEEDED, None)
    assert next_state(GONE, 1, SCHEDULE, NOW) == (DeliveryStatus.FAILED, None)


def test_failures_follow_the_schedule_then_fail() -> None:
    assert 8 <= delay_of(FAIL, 1) <= 12  # 10 s ± 20 %
    assert 16 <= delay_of(TIMEOUT, 2) <= 24
    assert next_state(FAIL, 3, SCHEDULE, NOW) == (DeliveryStatus.FAILED, None)


def test_retry_after_lengthens_but_never_shortens() -> None:
    assert delay_of(busy(429, "15")) == 15
    assert delay_of(busy(503, "15")) == 15
    assert 8 <= delay_of(busy(503, "0")) <= 12  # asking for less changes nothing
    assert delay_of(busy(429, "999999")) == 20  # capped at the longest step
    assert 8 <= delay_of(busy(500, "15")) <= 12  # only 429/503 are honoured
    assert 8 <= delay_of(busy(429, "soon")) <= 12


async def _delivery(db: Database, **sub_fields: Any) -> tuple[Subscription, int]:
    sub = Subscription(owner="t", url="http://127.0.0.1:9/", secret="whsec_x", **sub_fields)
    event = Event(id="e" * 24, district_id="d", type="users.updated", created=utcnow(), body="{}")
    async with db.write() as session:
        session.add(sub)
        session.add(event)
        delivery = Delivery(
            subscription_id=sub.id, event_id=event.id, event_type=event.type, next_attempt_at=NOW
        )
        session.add(delivery)
        await session.flush()
        assert delivery.id is not None
        delivery_id = delivery.id
    return sub, delivery_id


async def _record(
    db: Database, sub: Subscription, delivery_id: int, attempt: int, outcome: AttemptOutcome
) -> tuple[DeliveryStatus | None, bool]:
    read = Attempt(
        job=Job(delivery_id, attempt),
        status="pending",
        attempts=attempt - 1,
        manual_attempts=0,
        manual_retry=False,
        waiting_for=None,
        event_id="e" * 24,
        event_type="users.updated",
        body="{}",
        subscription=sub,
        signing=None,  # recorded, never sent
    )
    async with db.write() as session:
        (status,), _ = await record_attempts(
            session, [(read, outcome)], schedule=SCHEDULE, disable_after=3600
        )
    return status, status is None


async def _state(db: Database, sub_id: str, delivery_id: int) -> tuple[Subscription, Delivery, int]:
    async with db.read() as session:
        sub = await session.get(Subscription, sub_id)
        delivery = await session.get(Delivery, delivery_id)
        count = (
            await session.exec(
                select(func.count())
                .select_from(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
            )
        ).one()
    assert sub is not None
    assert delivery is not None
    return sub, delivery, int(count)


async def test_an_attempt_is_recorded_once(db: Database) -> None:
    sub, delivery_id = await _delivery(db)
    assert await _record(db, sub, delivery_id, 1, FAIL) == (DeliveryStatus.RETRYING, False)
    # the same attempt again (a duplicate job) and a stale one change nothing
    assert (await _record(db, sub, delivery_id, 1, OK))[1] is True
    assert (await _record(db, sub, delivery_id, 3, OK))[1] is True
    _, delivery, attempts = await _state(db, sub.id, delivery_id)
    assert (delivery.status, delivery.attempts, attempts) == ("retrying", 1, 1)
    assert delivery.last_status_code == 500
    assert delivery.next_attempt_at is not None

    assert await _record(db, sub, delivery_id, 2, OK) == (DeliveryStatus.SUCCEEDED, False)
    _, delivery, attempts = await _state(db, sub.id, delivery_id)
    assert (delivery.status, delivery.attempts, attempts) == ("succeeded", 2, 2)
    assert delivery.next_attempt_at is None


async def test_410_disables_the_subscription(db: Database) -> None:
    sub, delivery_id = await _delivery(db)
    assert await _record(db, sub, delivery_id, 1, GONE) == (DeliveryStatus.FAILED, False)
    sub_after, delivery, _ = await _state(db, sub.id, delivery_id)
    assert sub_after.enabled is False
    assert "410" in (sub_after.disabled_reason or "")
    assert delivery.status == "failed"


async def test_a_failure_starts_a_streak_and_a_success_ends_it(db: Database) -> None:
    sub, delivery_id = await _delivery(db)
    await _record(db, sub, delivery_id, 1, FAIL)
    failing, _, _ = await _state(db, sub.id, delivery_id)
    assert failing.failing_since is not None
    assert failing.enabled
    await _record(db, failing, delivery_id, 2, OK)
    healthy, _, _ = await _state(db, sub.id, delivery_id)
    assert healthy.failing_since is None
    assert healthy.enabled


@pytest.mark.parametrize("streak_hours", [0.5, 2])
async def test_sustained_failure_disables(db: Database, streak_hours: float) -> None:
    since = utcnow() - timedelta(hours=streak_hours)
    sub, delivery_id = await _delivery(db, failing_since=since)
    await _record(db, sub, delivery_id, 1, TIMEOUT)  # disable_after is one hour
    after, _, _ = await _state(db, sub.id, delivery_id)
    if streak_hours < 1:
        assert after.enabled
        assert after.disabled_reason is None
    else:
        assert not after.enabled
        assert "every attempt failed since" in (after.disabled_reason or "")


async def test_a_stale_streak_does_not_disable(db: Database) -> None:
    """An attempt that read the subscription before a success cleared its streak."""
    stale = utcnow() - timedelta(hours=2)
    sub, delivery_id = await _delivery(db, failing_since=stale)
    async with db.write() as session:
        row = await session.get(Subscription, sub.id)
        assert row is not None
        row.failing_since = None  # a success recorded meanwhile
        session.add(row)
    await _record(db, sub, delivery_id, 1, FAIL)
    after, _, _ = await _state(db, sub.id, delivery_id)
    assert after.enabled
    assert after.disabled_reason is None
