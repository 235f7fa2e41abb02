"""Re-sending on request (``POST /v1/deliveries/{id}/retry`` and ``…/recover``).

The request is written to the database first (``manual_retry``, due now), so it survives a
Redis outage: the reconciler queues it if the API's own enqueue is lost. A manual attempt is
counted apart from the retry schedule (``Delivery.manual_attempts``): it never uses up a
scheduled attempt, and when it fails the delivery goes back to where the schedule had it.
For an ordered subscription it is sent at once, or, if another delivery of the same record is
being attempted at that moment, as soon as that one ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import chains
from relay.db.models import Delivery, DeliveryStatus
from relay.db.tables import table_of
from relay.queue import Job, next_attempts

RESENDABLE = (
    DeliveryStatus.PENDING,
    DeliveryStatus.RETRYING,
    DeliveryStatus.SUCCEEDED,
    DeliveryStatus.FAILED,
)


async def request_redelivery(
    session: AsyncSession, now: datetime, *conditions: Any
) -> tuple[int, list[Job]]:
    """Mark the deliveries matching ``conditions`` for a manual attempt now; returns how many
    were marked and the jobs to queue (not those that wait for an attempt in flight)."""
    conn = await session.connection()
    jobs = await resend_now(conn, now, col(Delivery.status).in_(RESENDABLE), *conditions)
    waiting = await chains.behind_in_flight(conn, [j.delivery_id for j in jobs], now)
    return len(jobs), [j for j in jobs if j.delivery_id not in waiting]


async def resend_now(conn: AsyncConnection, now: datetime, *conditions: Any) -> list[Job]:
    """Make the deliveries matching ``conditions`` due now as a manual attempt (counted apart
    from the schedule; an ordered one leaves its chain); returns their jobs."""
    deliveries = table_of(Delivery)
    result = await conn.execute(
        deliveries.update()
        .where(*conditions)
        .values(
            status=DeliveryStatus.RETRYING,
            manual_retry=True,
            next_attempt_at=now,
            waiting_for=None,
            updated_at=now,
        )
        .returning(deliveries.c.id, deliveries.c.attempts, deliveries.c.manual_retry)
    )
    return next_attempts(result.all(), now)
