"""The delivery log's query, shared by the API, the /ui and ``bench/list_failed.py``.

Newest first, keyset-paged on id; the filters map onto the deliveries' indexes so a page
costs the same at a million rows as at a hundred (``bench/list_failed.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from relay.db.engine import Database
from relay.db.models import Delivery, DeliveryAttempt, Subscription


@dataclass(frozen=True)
class DeliveryFilters:
    subscription_id: str | None = None
    statuses: tuple[str, ...] = ()
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    owner: str | None = None  # only deliveries of this owner's subscriptions; None: all
    before_id: int | None = None  # keyset: ids below the last one served


def delivery_query(f: DeliveryFilters, limit: int) -> SelectOfScalar[Delivery]:
    """Newest first. One subscription and one status walk ``ix_deliveries_subscription_status_id``
    backwards and stop after ``limit`` rows, however many rows the table holds."""
    query = select(Delivery).order_by(col(Delivery.id).desc()).limit(limit)
    if f.subscription_id is not None:
        query = query.where(col(Delivery.subscription_id) == f.subscription_id)
    if len(f.statuses) == 1:
        query = query.where(col(Delivery.status) == f.statuses[0])
    elif f.statuses:
        query = query.where(col(Delivery.status).in_(f.statuses))
    if f.event_type is not None:
        query = query.where(col(Delivery.event_type) == f.event_type)
    if f.since is not None:
        query = query.where(col(Delivery.created_at) >= f.since)
    if f.until is not None:
        query = query.where(col(Delivery.created_at) < f.until)
    if f.owner is not None:
        owned = select(Subscription.id).where(col(Subscription.owner) == f.owner)
        query = query.where(col(Delivery.subscription_id).in_(owned))
    if f.before_id is not None:
        query = query.where(col(Delivery.id) < f.before_id)
    return query


async def list_deliveries(db: Database, filters: DeliveryFilters, limit: int) -> list[Delivery]:
    async with db.read() as session:
        return list((await session.exec(delivery_query(filters, limit))).all())


async def attempts_of(db: Database, delivery_id: int) -> Sequence[DeliveryAttempt]:
    """A delivery's attempts, oldest first."""
    query = (
        select(DeliveryAttempt)
        .where(col(DeliveryAttempt.delivery_id) == delivery_id)
        .order_by(col(DeliveryAttempt.id))
    )
    async with db.read() as session:
        return list((await session.exec(query)).all())


async def attempts_by_delivery(
    db: Database, delivery_ids: Sequence[int]
) -> dict[int, list[DeliveryAttempt]]:
    """The attempts of a page of deliveries, oldest first, in one query."""
    by_delivery: dict[int, list[DeliveryAttempt]] = {}
    if not delivery_ids:
        return by_delivery
    query = (
        select(DeliveryAttempt)
        .where(col(DeliveryAttempt.delivery_id).in_(delivery_ids))
        .order_by(col(DeliveryAttempt.delivery_id), col(DeliveryAttempt.id))
    )
    async with db.read() as session:
        for attempt in (await session.exec(query)).all():
            by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return by_delivery
