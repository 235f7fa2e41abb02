"""Recording a webhook attempt: the delivery's new state, the attempt row and the
subscription's health, in one transaction.

The update is a compare-and-set on the attempt count, so a job that runs twice (arq is
at-least-once; a killed worker's job runs again) records its attempt only once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import col, update
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import AttemptOutcome
from relay.ingest import DueDelivery

logger = logging.getLogger("relay.delivery")

RETRY_AFTER_STATUSES = (429, 503)


@dataclass(frozen=True)
class Recorded:
    status: DeliveryStatus
    next_attempt: DueDelivery | None
    duplicate: bool = False


def next_state(
    outcome: AttemptOutcome, attempt: int, schedule: RetrySchedule, now: datetime
) -> tuple[DeliveryStatus, datetime | None]:
    """``attempt`` is the attempt's place in the schedule (1 = the first attempt); manual
    retries do not count, so they never use up the scheduled ones."""
    if outcome.succeeded:
        return DeliveryStatus.SUCCEEDED, None
    if outcome.gone:
        return DeliveryStatus.FAILED, None
    retry_after = outcome.retry_after if outcome.status_code in RETRY_AFTER_STATUSES else None
    delay = schedule.delay_after(attempt, retry_after=retry_after, now=now)
    if delay is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.RETRYING, now + timedelta(seconds=delay)


async def record_attempt(
    db: Database,
    *,
    delivery_id: int,
    attempt: int,
    subscription: Subscription,
    outcome: AttemptOutcome,
    attempted_at: datetime,
    schedule: RetrySchedule,
    disable_after: float,
    manual_attempts: int = 0,
    manual: bool = False,
) -> Recorded:
    """Record attempt number ``attempt`` (all attempts, manual ones included). A failed manual
    retry leaves the schedule where it was: the next scheduled attempt, or failed if there is
    none left."""
    now = utcnow()
    # the attempt's place in the schedule; for a manual retry, the last scheduled one before it
    position = attempt - manual_attempts - (1 if manual else 0)
    if manual and not outcome.succeeded and not outcome.gone:
        delay = schedule.next_delay(position) if position >= 1 else 0.0
        status, next_at = (
            (DeliveryStatus.FAILED, None)
            if delay is None
            else (DeliveryStatus.RETRYING, now + timedelta(seconds=delay))
        )
    else:
        status, next_at = next_state(outcome, position, schedule, now)
    async with db.write() as session:
        result = await session.exec(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id)
            .where(col(Delivery.attempts) == attempt - 1)
            .values(
                attempts=attempt,
                manual_attempts=manual_attempts + (1 if manual else 0),
                manual_retry=False,
                status=status,
                next_attempt_at=next_at,
                last_status_code=outcome.status_code,
                updated_at=now,
            )
        )
        if result.rowcount != 1:
            return Recorded(status, None, duplicate=True)
        session.add(
            DeliveryAttempt(
                delivery_id=delivery_id,
                attempted_at=attempted_at,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                response_excerpt=outcome.response_excerpt,
                trigger="manual" if manual else "schedule",
            )
        )
        await _update_health(session, subscription, outcome, now, disable_after)
    next_attempt = DueDelivery(delivery_id, attempt + 1, next_at) if next_at else None
    return Recorded(status, next_attempt)


async def _update_health(
    session: AsyncSession,
    subscription: Subscription,
    outcome: AttemptOutcome,
    now: datetime,
    disable_after: float,
) -> None:
    """Success clears the failure streak; 410 or a streak longer than ``disable_after``
    disables the subscription with a reason. Touches the row only when something changes.

    ``subscription`` was read before the attempt was sent, so every change is a
    compare-and-set against what was read: an attempt that started before a success cleared
    the streak cannot disable the subscription on the strength of that old streak, and a
    subscription already disabled keeps the reason it was first disabled for."""
    stmt = update(Subscription).where(col(Subscription.id) == subscription.id)
    values: dict[str, object]
    if outcome.succeeded:
        if subscription.failing_since is None:
            return
        values = {"failing_since": None}
    elif outcome.gone:
        values = {"enabled": False, "disabled_reason": "the endpoint answered 410 Gone"}
        stmt = stmt.where(col(Subscription.enabled).is_(True))
    elif subscription.failing_since is None:
        values = {"failing_since": now}
        stmt = stmt.where(col(Subscription.failing_since).is_(None))
    elif (now - subscription.failing_since).total_seconds() >= disable_after:
        since = subscription.failing_since.isoformat(timespec="seconds")
        values = {"enabled": False, "disabled_reason": f"every attempt failed since {since}"}
        stmt = stmt.where(col(Subscription.enabled).is_(True)).where(
            col(Subscription.failing_since) == subscription.failing_since
        )
    else:
        return
    result = await session.exec(stmt.values(**values, updated_at=now))
    if values.get("enabled") is False and result.rowcount:
        logger.warning(
            "subscription disabled",
            extra={"subscription_id": subscription.id, "reason": values["disabled_reason"]},
        )
