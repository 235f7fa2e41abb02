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
) -> Recorded:
    now = utcnow()
    status, next_at = next_state(outcome, attempt, schedule, now)
    async with db.write() as session:
        result = await session.exec(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id)
            .where(col(Delivery.attempts) == attempt - 1)
            .values(
                attempts=attempt,
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
    disables the subscription with a reason. Touches the row only when something changes."""
    values: dict[str, object] = {}
    if outcome.succeeded:
        if subscription.failing_since is not None:
            values["failing_since"] = None
    elif outcome.gone:
        values |= {"enabled": False, "disabled_reason": "the endpoint answered 410 Gone"}
    elif subscription.failing_since is None:
        values["failing_since"] = now
    elif (now - subscription.failing_since).total_seconds() >= disable_after:
        since = subscription.failing_since.isoformat(timespec="seconds")
        values |= {
            "enabled": False,
            "disabled_reason": f"every attempt failed since {since}",
        }
    if not values:
        return
    stmt = update(Subscription).where(col(Subscription.id) == subscription.id)
    if "failing_since" in values and values["failing_since"] is not None:
        stmt = stmt.where(col(Subscription.failing_since).is_(None))
    await session.exec(stmt.values(**values, updated_at=now))
    if values.get("enabled") is False:
        logger.warning(
            "subscription disabled",
            extra={"subscription_id": subscription.id, "reason": values["disabled_reason"]},
        )
