"""The deliver job: one attempt of one delivery.

Idempotent: the job carries the attempt number, and does nothing unless the delivery is still
waiting for exactly that attempt, so a duplicate job (reconciler, crash, Redis replay) is a
no-op; a duplicate that raced past the check cannot record twice either (compare-and-set in
``record_attempt``). The receiver may then see the same ``webhook-id`` twice, which is what
at-least-once means and what the id is for.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from arq import Retry
from sqlmodel import col, select, update

from relay.db import utcnow
from relay.db.models import Delivery, DeliveryStatus, Event, Subscription
from relay.delivery.outcomes import record_attempt
from relay.delivery.signing import active_secrets, webhook_headers
from workers.context import PER_SUBSCRIPTION_CONCURRENCY, WorkerContext, context_of

logger = logging.getLogger("relay.delivery")

WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


async def deliver(ctx: dict[str, Any], delivery_id: int, attempt: int) -> str:
    app = context_of(ctx)
    async with app.db.read() as session:
        row = (
            await session.exec(
                select(Delivery, Subscription, Event)
                .join(
                    Subscription,
                    col(Subscription.id) == col(Delivery.subscription_id),
                    isouter=True,
                )
                .join(Event, col(Event.id) == col(Delivery.event_id), isouter=True)
                .where(col(Delivery.id) == delivery_id)
            )
        ).first()
    if row is None:
        return "gone"
    delivery, subscription, event = row
    if delivery.status not in WAITING or delivery.attempts != attempt - 1:
        return "stale"
    if subscription is None or event is None:
        await _settle(app, delivery_id, DeliveryStatus.CANCELLED)
        return "cancelled"
    if not subscription.enabled:
        await _settle(app, delivery_id, None)  # parked until the subscription is re-enabled
        return "parked"

    if app.in_flight[subscription.id] >= PER_SUBSCRIPTION_CONCURRENCY:
        raise Retry(defer=random.uniform(0.5, 1.5))
    app.in_flight[subscription.id] += 1
    try:
        body = event.body.encode()
        attempted_at = utcnow()
        secrets = active_secrets(
            subscription.secret,
            subscription.previous_secret,
            subscription.previous_secret_expires_at,
            attempted_at,
        )
        headers = webhook_headers(secrets, event.id, body)
        outcome = await app.sender.send(subscription.url, headers, body)
    finally:
        app.in_flight[subscription.id] -= 1
        if not app.in_flight[subscription.id]:
            del app.in_flight[subscription.id]

    recorded = await record_attempt(
        app.db,
        delivery_id=delivery_id,
        attempt=attempt,
        subscription=subscription,
        outcome=outcome,
        attempted_at=attempted_at,
        schedule=app.schedule,
        disable_after=app.settings.disable_after,
        manual_attempts=delivery.manual_attempts,
        manual=delivery.manual_retry,
    )
    log = logger.info if outcome.succeeded else logger.warning
    log(
        "delivery attempt",
        extra={
            "delivery_id": delivery_id,
            "event_id": event.id,
            "subscription_id": subscription.id,
            "attempt": attempt,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "result": recorded.status.value,
        },
    )
    if recorded.next_attempt is not None:
        await app.dispatcher.enqueue([recorded.next_attempt])
    return recorded.status.value


async def _settle(app: WorkerContext, delivery_id: int, status: DeliveryStatus | None) -> None:
    """Cancel a delivery (``status``) or park it (None: no next attempt until re-enabled)."""
    values: dict[str, object] = {"next_attempt_at": None, "updated_at": utcnow()}
    if status is not None:
        values["status"] = status
    async with app.db.write() as session:
        await session.exec(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id)
            .where(col(Delivery.status).in_(WAITING))
            .values(**values)
        )
