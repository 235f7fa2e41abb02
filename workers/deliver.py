"""The deliver job: one attempt of one delivery.

Idempotent: the job carries the attempt number, and does nothing unless the delivery is still
waiting for exactly that attempt, so a duplicate job (reconciler, crash, Redis replay) is a
no-op; a duplicate that raced past the check cannot record twice either (compare-and-set in
``record_attempts``). The receiver may then see the same ``webhook-id`` twice, which is what
at-least-once means and what the id is for.

The read is shared by the jobs claimed together (``workers.delivery_queue``) and the write by
the jobs that finish at about the same time (``workers.batching``): one query and one
transaction for many webhooks instead of two each.
"""

from __future__ import annotations

import asyncio
import logging
import random

from sqlmodel import col, update

from relay._exceptions import SubscriptionBusy
from relay.db import utcnow
from relay.db.models import WAITING, Delivery, DeliveryStatus
from relay.delivery.outcomes import AttemptRecord
from relay.delivery.signing import active_secrets, webhook_headers
from workers.batching import DeliveryRow
from workers.context import SLOT_WAIT, WorkerContext

logger = logging.getLogger("relay.delivery")


async def deliver(
    app: WorkerContext, delivery_id: int, attempt: int, delivery: DeliveryRow | None
) -> str:
    """Send attempt ``attempt`` of ``delivery_id`` if the database still waits for it, and
    record it; returns the delivery's status after it (or why nothing was sent).

    ``delivery`` is the row as read (None: gone); ``workers.delivery_queue`` reads the
    deliveries of the jobs it claims together in one query (``load_deliveries``)."""
    if delivery is None:
        return "gone"
    if delivery.status not in WAITING or delivery.attempts != attempt - 1:
        return "stale"
    subscription = delivery.subscription
    if subscription is None or delivery.body is None:
        await _settle(app, delivery_id, DeliveryStatus.CANCELLED)
        return "cancelled"
    if not subscription.enabled:
        await _settle(app, delivery_id, None)  # parked until the subscription is re-enabled
        return "parked"

    slot = app.slots[subscription.id]
    if not await _acquire(slot):
        raise SubscriptionBusy(defer=random.uniform(0.5, 1.5))
    try:
        body = delivery.body.encode()
        attempted_at = utcnow()
        secrets = active_secrets(
            subscription.secret,
            subscription.previous_secret,
            subscription.previous_secret_expires_at,
            attempted_at,
        )
        headers = webhook_headers(secrets, delivery.event_id, body)
        outcome = await app.sender.send(subscription.url, headers, body)
    finally:
        # released once the receiver answered, not once the attempt is recorded: holding it
        # through the shared write measured a third slower (bench/throughput.py)
        slot.release()

    # Shielded: the attempt was sent, so it must be recorded even if the job's timeout (just
    # above the delivery timeout) fires while the database is slow; a cancelled recording
    # would let the job run again and re-send, ignoring what the receiver said.
    recorded = await asyncio.shield(
        app.records.submit(
            AttemptRecord(
                delivery_id=delivery_id,
                attempt=attempt,
                subscription=subscription,
                outcome=outcome,
                attempted_at=attempted_at,
                manual_attempts=delivery.manual_attempts,
                manual=delivery.manual_retry,
            )
        )
    )
    # a success is a DEBUG line (it is in the database and the API anyway): at INFO, one JSON
    # line per webhook was a measurable share of a busy worker's CPU
    log = logger.debug if outcome.succeeded else logger.warning
    log(
        "delivery attempt",
        extra={
            "delivery_id": delivery_id,
            "event_id": delivery.event_id,
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


async def _acquire(slot: asyncio.Semaphore) -> bool:
    """One of the subscription's in-flight slots, waiting at most SLOT_WAIT for it."""
    if not slot.locked():
        await slot.acquire()
        return True
    try:
        async with asyncio.timeout(SLOT_WAIT):  # not wait_for: no task per waiting job
            await slot.acquire()
    except TimeoutError:
        return False
    return True


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
