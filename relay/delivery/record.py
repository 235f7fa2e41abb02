"""The record step: an attempt's result, written in one transaction with the attempts of
the jobs that finished at about the same time (``relay.delivery.pipeline``).

A recorded attempt changes the delivery (status, attempt count, next attempt time), adds its
row to the delivery log and, when its health changes, the subscription. The delivery update
is a compare-and-set on the attempt count, so a job that runs twice (a killed worker's job
runs again; the queue is at-least-once) records its attempt only once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Update, bindparam
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import chains, utcnow
from relay.db.models import FINAL, Delivery, DeliveryAttempt, DeliveryStatus, Subscription
from relay.db.stats import Counted, count_attempts
from relay.db.tables import one_of, table_of
from relay.delivery.attempt import Attempt
from relay.delivery.outcome import state_after
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import AttemptOutcome
from relay.fanout import operational
from relay.queue import Job, next_attempts

logger = logging.getLogger("relay.delivery")

Sent = tuple[Attempt, AttemptOutcome]

_deliveries = table_of(Delivery)
# built once (a reused statement keeps its cache key), the ids bound as one list
_LOCK = (
    select(_deliveries.c.id, _deliveries.c.attempts, _deliveries.c.status)
    .where(one_of(_deliveries.c.id, "ids"))
    .with_for_update()
)
_UPDATE = (
    _deliveries.update()
    .where(_deliveries.c.id == bindparam("b_id"))
    .where(_deliveries.c.attempts == bindparam("b_expected"))
    .values(manual_retry=False)
)
_INSERT_ATTEMPTS = table_of(DeliveryAttempt).insert()


async def record_attempts(
    session: AsyncSession,
    sent: Sequence[Sent],
    *,
    schedule: RetrySchedule,
    disable_after: float,
) -> tuple[list[DeliveryStatus | None], list[Job]]:
    """Record ``sent`` in the caller's write transaction, in a fixed number of statements
    whatever their number; returns each one's new delivery status (None: not recorded, a
    duplicate or stale job) and the next attempts to queue once the transaction committed.

    Compare-and-set on the attempt count, in bulk: the deliveries' attempt counts are read
    with the rows locked (FOR UPDATE; SQLite's write transaction already holds the database),
    and only attempts that are the next one, the first of each delivery in the batch, are
    applied (one executemany UPDATE, still guarded by the count, and one multi-row INSERT of
    the attempt rows). A subscription is updated only when its health changes. A delivery
    that ends releases the one of an ordered subscription waiting for it
    (``relay.db.chains``), in the same transaction; so are the subscriptions' hourly
    statistics counted and the operational events raised (a delivery failed, a subscription
    disabled)."""
    if not sent:
        return [], []
    conn = await session.connection()
    rows = await conn.execute(_LOCK, {"ids": {attempt.delivery_id for attempt, _ in sent}})
    now = utcnow()  # with the rows locked: next attempts are due after this commit starts
    locked = rows.all()
    current: dict[int, int] = {int(i): int(n) for i, n, _ in locked}
    # ended while the attempt was in flight (cancelled by a DELETE or a disable): the attempt
    # is logged, but a final status never moves (cancelled does not become succeeded)
    ended = {int(i): DeliveryStatus(s) for i, _, s in locked if s in FINAL}
    statuses: list[DeliveryStatus | None] = []
    next_jobs: list[Job] = []
    updates: list[dict[str, object]] = []
    attempt_rows: list[dict[str, object]] = []
    for attempt, outcome in sent:
        if current.get(attempt.delivery_id) != attempt.number - 1:
            statuses.append(None)
            continue
        current[attempt.delivery_id] = attempt.number  # a second copy in the batch is stale
        if attempt.delivery_id in ended:
            status, next_at = ended[attempt.delivery_id], None
        else:
            status, next_at = state_after(attempt, outcome, schedule, now)
        statuses.append(status)
        if next_at is not None:
            next_jobs.append(Job(attempt.delivery_id, attempt.number + 1, next_at))
        updates.append(_delivery_update(attempt, outcome, status, next_at, now))
        attempt_rows.append(_attempt_row(attempt, outcome))
    if updates:
        await conn.execute(_UPDATE, updates)
        await conn.execute(_INSERT_ATTEMPTS, attempt_rows)
    recorded = [
        (a, o, s)
        for (a, o), s in zip(sent, statuses, strict=True)
        if s is not None and a.delivery_id not in ended
    ]
    next_jobs += await _consequences(session, recorded, now, disable_after)
    return statuses, next_jobs


Recorded = tuple[Attempt, AttemptOutcome, DeliveryStatus]


async def _consequences(
    session: AsyncSession, recorded: Sequence[Recorded], now: datetime, disable_after: float
) -> list[Job]:
    """What the recorded attempts cause, in the same transaction: ended deliveries release
    the ones waiting for them, subscriptions' health and hourly statistics change, and
    operational events are raised; returns the jobs to queue after the commit."""
    conn = await session.connection()
    released = await chains.release(
        conn, [a.delivery_id for a, _, s in recorded if s in FINAL], now
    )
    notices = await _failed_notices(conn, recorded)
    for attempt, outcome, _ in recorded:
        if attempt.subscription is not None:
            disabled = await _update_health(
                session, attempt.subscription, outcome, now, disable_after
            )
            notices += [disabled] if disabled else []
    await count_attempts(conn, (_counted(a, o, s) for a, o, s in recorded if a.subscription))
    return next_attempts(released, now) + await operational.raise_notices(conn, notices, now)


def _counted(attempt: Attempt, outcome: AttemptOutcome, status: DeliveryStatus) -> Counted:
    assert attempt.subscription is not None
    return Counted(
        attempt.subscription.id,
        outcome.attempted_at,
        outcome.succeeded,
        outcome.duration_ms,
        status == DeliveryStatus.FAILED,
    )


async def _failed_notices(
    conn: AsyncConnection, recorded: Sequence[Recorded]
) -> list[operational.Notice]:
    """``relay.delivery.failed`` for each delivery whose schedule ran out in this batch; not
    for a 410 (the subscription's ``relay.subscription.disabled`` says it), nor for the
    relay's own events (an operational event is never about another)."""
    failed = {
        a.delivery_id: (a.subscription.owner, o)
        for a, o, s in recorded
        if s == DeliveryStatus.FAILED
        and not o.gone
        and a.subscription is not None
        and not operational.is_operational(a.event_type)
    }
    if not failed:
        return []
    deliveries = table_of(Delivery)
    rows = await conn.execute(deliveries.select().where(deliveries.c.id.in_(failed)))
    notices = []
    for row in rows.mappings():
        owner, outcome = failed[row["id"]]
        notices.append(operational.delivery_failed(owner, dict(row), _attempt_shown(outcome)))
    return notices


def _delivery_update(
    attempt: Attempt,
    outcome: AttemptOutcome,
    status: DeliveryStatus,
    next_at: datetime | None,
    now: datetime,
) -> dict[str, object]:
    return {
        "b_id": attempt.delivery_id,
        "updated_at": now,
        "b_expected": attempt.number - 1,
        "attempts": attempt.number,
        "manual_attempts": attempt.manual_attempts + (1 if attempt.manual_retry else 0),
        "status": status,
        "next_attempt_at": next_at,
        "last_status_code": outcome.status_code,
    }


def _attempt_row(attempt: Attempt, outcome: AttemptOutcome) -> dict[str, object]:
    return _attempt_shown(outcome) | {
        "delivery_id": attempt.delivery_id,
        "trigger": "manual" if attempt.manual_retry else "schedule",
    }


def _attempt_shown(outcome: AttemptOutcome) -> dict[str, object]:
    """An attempt as the delivery log shows it."""
    return {
        "attempted_at": outcome.attempted_at,
        "status_code": outcome.status_code,
        "duration_ms": outcome.duration_ms,
        "error": outcome.error,
        "response_excerpt": outcome.response_excerpt,
    }


#: why a subscription is disabled when a worker cannot decrypt its signing secret
UNREADABLE_SECRET = (
    "its signing secret cannot be decrypted with the workers' RELAY_ENCRYPTION_KEY (it was "
    "written with a key they do not have): set a new secret (rotate-secret, or PATCH "
    "secret) or give the workers that key, then re-enable it"
)


async def disable_unreadable(
    session: AsyncSession, subscription: Subscription, now: datetime
) -> list[Job]:
    """Disable ``subscription``, whose signing secret the process's keys do not decrypt,
    with ``UNREADABLE_SECRET`` as its reason, in the caller's write transaction; returns the
    jobs of its ``relay.subscription.disabled`` (none if it was disabled already, by this
    or anything else: it keeps the reason it was first disabled for)."""
    stmt = (
        update(Subscription)
        .where(col(Subscription.id) == subscription.id)
        .where(col(Subscription.enabled).is_(True))
    )
    notice = await _disable(session, stmt, subscription, UNREADABLE_SECRET, now)
    if notice is None:
        return []
    return await operational.raise_notices(await session.connection(), [notice], now)


async def _disable(
    session: AsyncSession, stmt: Update, subscription: Subscription, reason: str, now: datetime
) -> operational.Notice | None:
    """Run ``stmt`` (an UPDATE of the subscription with its compare-and-set conditions) to
    disable it for ``reason``; its ``relay.subscription.disabled`` if it did."""
    result = await session.exec(stmt.values(enabled=False, disabled_reason=reason, updated_at=now))
    if not result.rowcount:
        return None
    logger.warning(
        "subscription disabled", extra={"subscription_id": subscription.id, "reason": reason}
    )
    return operational.subscription_disabled(subscription, reason, now)


async def _update_health(
    session: AsyncSession,
    subscription: Subscription,
    outcome: AttemptOutcome,
    now: datetime,
    disable_after: float,
) -> operational.Notice | None:
    """Success clears the failure streak; 410 or a streak longer than ``disable_after``
    disables the subscription with a reason, and returns its ``relay.subscription.disabled``.
    Touches the row only when something changes.

    ``subscription`` was read before the attempt was sent, so every change is a
    compare-and-set against what was read: an attempt that started before a success cleared
    the streak cannot disable the subscription on the strength of that old streak, and a
    subscription already disabled keeps the reason it was first disabled for."""
    if outcome.succeeded and subscription.failing_since is None:
        return None  # the common case: nothing to write, and no statement to build (a hot path)
    stmt = update(Subscription).where(col(Subscription.id) == subscription.id)
    if outcome.succeeded:
        await session.exec(stmt.values(failing_since=None, updated_at=now))
        return None
    if outcome.gone:
        stmt = stmt.where(col(Subscription.enabled).is_(True))
        return await _disable(session, stmt, subscription, "the endpoint answered 410 Gone", now)
    if subscription.failing_since is None:
        stmt = stmt.where(col(Subscription.failing_since).is_(None))
        await session.exec(stmt.values(failing_since=now, updated_at=now))
        return None
    if (now - subscription.failing_since).total_seconds() >= disable_after:
        since = subscription.failing_since.isoformat(timespec="seconds")
        stmt = stmt.where(col(Subscription.enabled).is_(True)).where(
            col(Subscription.failing_since) == subscription.failing_since
        )
        return await _disable(
            session, stmt, subscription, f"every attempt failed since {since}", now
        )
    return None
