"""Recording a webhook attempt: the delivery's new state, the attempt row and the
subscription's health, in one transaction (shared by the attempts of concurrent jobs).

The update is a compare-and-set on the attempt count, so a job that runs twice (arq is
at-least-once; a killed worker's job runs again) records its attempt only once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import AttemptOutcome
from relay.ingest import DueDelivery, table_of

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


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt to record: attempt number ``attempt`` (all attempts, manual ones
    included) of ``delivery_id``, with what was read before it was sent."""

    delivery_id: int
    attempt: int
    subscription: Subscription
    outcome: AttemptOutcome
    attempted_at: datetime
    manual_attempts: int = 0
    manual: bool = False


def _planned_state(
    record: AttemptRecord, schedule: RetrySchedule, now: datetime
) -> tuple[DeliveryStatus, datetime | None]:
    """A failed manual retry leaves the schedule where it was: the next scheduled attempt, or
    failed if there is none left."""
    outcome = record.outcome
    # the attempt's place in the schedule; for a manual retry, the last scheduled one before it
    position = record.attempt - record.manual_attempts - (1 if record.manual else 0)
    if record.manual and not outcome.succeeded and not outcome.gone:
        delay = schedule.next_delay(position) if position >= 1 else 0.0
        if delay is None:
            return DeliveryStatus.FAILED, None
        return DeliveryStatus.RETRYING, now + timedelta(seconds=delay)
    return next_state(outcome, position, schedule, now)


async def record_attempts(
    session: AsyncSession,
    records: Sequence[AttemptRecord],
    *,
    schedule: RetrySchedule,
    disable_after: float,
) -> list[Recorded]:
    """Record ``records`` in the caller's write transaction, in a fixed number of statements
    whatever their number: the workers call this for the attempts of many concurrent jobs at
    once (``workers.batching``), one transaction per batch instead of one per webhook.

    Compare-and-set on the attempt count, in bulk: the deliveries' attempt counts are read
    with the rows locked (FOR UPDATE; SQLite's write transaction already holds the database),
    and only records whose attempt is the next one, the first of each delivery in the batch,
    are applied (one executemany UPDATE, still guarded by the count, and one multi-row INSERT
    of the attempt rows). A subscription is updated only when its health changes."""
    if not records:
        return []
    conn = await session.connection()
    deliveries = table_of(Delivery)
    rows = await conn.execute(
        select(deliveries.c.id, deliveries.c.attempts)
        .where(deliveries.c.id.in_({r.delivery_id for r in records}))
        .with_for_update()
    )
    now = utcnow()  # with the rows locked: next attempts are due after this commit starts
    current: dict[int, int] = {int(i): int(n) for i, n in rows.all()}
    results: list[Recorded] = []
    updates: list[dict[str, object]] = []
    attempt_rows: list[dict[str, object]] = []
    applied: list[AttemptRecord] = []
    for record in records:
        status, next_at = _planned_state(record, schedule, now)
        if current.get(record.delivery_id) != record.attempt - 1:
            results.append(Recorded(status, None, duplicate=True))
            continue
        current[record.delivery_id] = record.attempt  # a second copy in the batch is stale
        outcome = record.outcome
        updates.append(
            {
                "b_id": record.delivery_id,
                "b_expected": record.attempt - 1,
                "attempts": record.attempt,
                "manual_attempts": record.manual_attempts + (1 if record.manual else 0),
                "status": status,
                "next_attempt_at": next_at,
                "last_status_code": outcome.status_code,
            }
        )
        attempt_rows.append(
            {
                "delivery_id": record.delivery_id,
                "attempted_at": record.attempted_at,
                "status_code": outcome.status_code,
                "duration_ms": outcome.duration_ms,
                "error": outcome.error,
                "response_excerpt": outcome.response_excerpt,
                "trigger": "manual" if record.manual else "schedule",
            }
        )
        applied.append(record)
        next_attempt = (
            DueDelivery(record.delivery_id, record.attempt + 1, next_at) if next_at else None
        )
        results.append(Recorded(status, next_attempt))
    if updates:
        await conn.execute(
            deliveries.update()
            .where(deliveries.c.id == bindparam("b_id"))
            .where(deliveries.c.attempts == bindparam("b_expected"))
            .values(manual_retry=False, updated_at=now),
            updates,
        )
        await conn.execute(table_of(DeliveryAttempt).insert(), attempt_rows)
    for record in applied:
        await _update_health(session, record.subscription, record.outcome, now, disable_after)
    return results


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
    """Record one attempt in a transaction of its own (see ``record_attempts``)."""
    record = AttemptRecord(
        delivery_id, attempt, subscription, outcome, attempted_at, manual_attempts, manual
    )
    async with db.write() as session:
        (recorded,) = await record_attempts(
            session, [record], schedule=schedule, disable_after=disable_after
        )
    return recorded


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
    if outcome.succeeded and subscription.failing_since is None:
        return  # the common case: nothing to write, and no statement to build (a hot path)
    stmt = update(Subscription).where(col(Subscription.id) == subscription.id)
    values: dict[str, object]
    if outcome.succeeded:
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
