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

from sqlmodel import col, update
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import chains
from relay.db.models import Delivery, DeliveryStatus
from relay.queue import Job

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
    result = await session.exec(
        update(Delivery)
        .where(*conditions)
        .where(col(Delivery.status).in_(RESENDABLE))
        .values(
            status=DeliveryStatus.RETRYING,
            manual_retry=True,
            next_attempt_at=now,
            waiting_for=None,  # an ordered delivery asked for leaves its chain
            updated_at=now,
        )
        .returning(col(Delivery.id), col(Delivery.attempts))
    )
    jobs = [Job(int(i), int(a) + 1, now, manual=True) for i, a in result.all()]
    conn = await session.connection()
    waiting = await chains.behind_in_flight(conn, [j.delivery_id for j in jobs], now)
    return len(jobs), [j for j in jobs if j.delivery_id not in waiting]
