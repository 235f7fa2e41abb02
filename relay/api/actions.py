"""What an operator does to deliveries and subscriptions, shared by the REST routes and /ui:
retry one delivery, recover a subscription's failed window, re-enable a subscription.

Each takes the caller's :class:`Principal` and refuses with :class:`ApiError` exactly as the
API answers (404 for what the caller may not see, 409 for what cannot be done now), so a
button on the page and a ``curl`` behave alike.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col

from relay.api import schemas
from relay.api.auth import Principal
from relay.api.context import Services
from relay.api.errors import ApiError
from relay.api.routes.deliveries import load_visible_delivery
from relay.api.routes.subscriptions import apply_update, load_visible
from relay.db import utcnow
from relay.db.models import Delivery, DeliveryStatus, Subscription
from relay.delivery.probe import TEST_EVENT_TYPE
from relay.delivery.redeliver import request_redelivery
from relay.queue import Job


async def enqueue(svc: Services, due: list[Job]) -> None:
    """Queue at once what was marked due (the reconciler does it anyway if this is lost)."""
    if svc.queue is not None and due:
        await svc.queue.enqueue(due)


def require_enabled(subscription: Subscription | None) -> None:
    if subscription is not None and not subscription.enabled:
        raise ApiError(409, "the subscription is disabled; enable it (PATCH enabled=true) first")


async def retry_delivery(svc: Services, who: Principal, raw_id: str) -> tuple[int, datetime]:
    """A manual attempt of one delivery, queued now; returns its id and the time it is due."""
    delivery = await load_visible_delivery(svc, who, raw_id)
    if delivery.status == DeliveryStatus.CANCELLED:
        raise ApiError(409, "the delivery was cancelled: its subscription no longer exists")
    if delivery.event_type == TEST_EVENT_TYPE:
        raise ApiError(
            409,
            "a relay.test delivery is not sent again; send a new test with POST "
            f"/v1/subscriptions/{delivery.subscription_id}/test",
        )
    now = utcnow()
    async with svc.db.write() as session:
        require_enabled(await session.get(Subscription, delivery.subscription_id))
        marked, due = await request_redelivery(
            session,
            now,
            col(Delivery.id) == delivery.id,
            col(Delivery.attempts) == delivery.attempts,
        )
    if not marked:
        raise ApiError(409, "the delivery changed while the retry was requested; try again")
    await enqueue(svc, due)
    assert delivery.id is not None
    return delivery.id, now


async def recoverable(svc: Services, who: Principal, subscription_id: str) -> Subscription:
    """The subscription whose failed deliveries the caller asks to re-send: visible, enabled."""
    sub = await load_visible(svc, who, subscription_id)
    require_enabled(sub)
    return sub


async def recover_failed(
    svc: Services, sub: Subscription, since: datetime, until: datetime | None
) -> tuple[int, list[Job]]:
    """Mark the subscription's failed deliveries created in [since, until) (until default
    now) for a manual attempt; returns how many, and the jobs for the caller to queue."""
    now = utcnow()
    async with svc.db.write() as session:
        return await request_redelivery(
            session,
            now,
            col(Delivery.subscription_id) == sub.id,
            col(Delivery.status) == DeliveryStatus.FAILED,
            col(Delivery.event_type) != TEST_EVENT_TYPE,
            col(Delivery.created_at) >= since,
            col(Delivery.created_at) < (until or now),
        )


async def enable_subscription(svc: Services, who: Principal, subscription_id: str) -> Subscription:
    """What ``PATCH {"enabled": true}`` does: enabled, its disabled reason and failing streak
    cleared; deliveries parked while it was disabled go out within the reconcile interval."""
    return await apply_update(svc, who, subscription_id, schemas.SubscriptionUpdate(enabled=True))
