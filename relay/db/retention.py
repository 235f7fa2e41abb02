"""Retention: events, deliveries and attempts older than ``RELAY_RETENTION_DAYS`` are deleted
in small batches, each its own short transaction, so the purge never holds long locks (on
SQLite it would otherwise stall every writer). A delivery still waiting for an attempt is
kept, and so is its event, whatever its age: retention never loses a delivery; nor one that
a delivery of an ordered subscription waits for."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import aliased
from sqlmodel import col, delete, exists, select

from relay.db.engine import Database, utcnow
from relay.db.models import (
    UI_SESSION_SECONDS,
    WAITING,
    Delivery,
    DeliveryAttempt,
    EndedUiSession,
    Event,
    Replay,
    SubscriptionHour,
)

logger = logging.getLogger("relay.retention")


async def purge_deliveries(db: Database, cutoff: datetime, batch: int) -> int:
    purged = 0
    waiter = aliased(Delivery)
    # a delivery that ends releases the one waiting for it in the same transaction, so
    # none should be awaited; kept anyway if one is (an ordered chain never loses a link)
    awaited = exists().where(col(waiter.waiting_for) == col(Delivery.id))
    while True:
        async with db.write() as session:
            ids = list(
                (
                    await session.exec(
                        select(Delivery.id)
                        .where(col(Delivery.created_at) < cutoff)
                        .where(col(Delivery.status).not_in(WAITING))
                        .where(~awaited)
                        .order_by(col(Delivery.id))
                        .limit(batch)
                    )
                ).all()
            )
            if ids:
                await session.exec(
                    delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(ids))
                )
                await session.exec(delete(Delivery).where(col(Delivery.id).in_(ids)))
        purged += len(ids)
        if len(ids) < batch:
            return purged


async def purge_events(db: Database, cutoff: datetime, batch: int) -> int:
    purged = 0
    while True:
        async with db.write() as session:
            has_delivery = exists().where(col(Delivery.event_id) == col(Event.id))
            ids = list(
                (
                    await session.exec(
                        select(Event.id)
                        .where(col(Event.received_at) < cutoff)
                        .where(~has_delivery)
                        .order_by(col(Event.received_at))
                        .limit(batch)
                    )
                ).all()
            )
            if ids:
                await session.exec(delete(Event).where(col(Event.id).in_(ids)))
        purged += len(ids)
        if len(ids) < batch:
            return purged


STATS_KEPT = timedelta(days=8)


async def purge_expired(db: Database, retention_days: float, batch: int) -> int:
    """Delete what is older than ``retention_days``; returns how many rows went."""
    cutoff = utcnow() - timedelta(days=retention_days)
    deliveries = await purge_deliveries(db, cutoff, batch)
    events = await purge_events(db, cutoff, batch)
    async with db.write() as session:  # finished replays, hourly stats: a few rows a day
        await session.exec(
            delete(Replay).where(col(Replay.done).is_(True)).where(col(Replay.updated_at) < cutoff)
        )
        # the stats endpoint's longest window is a week: keep at least that, whatever the setting
        kept = min(cutoff, utcnow() - STATS_KEPT)
        await session.exec(delete(SubscriptionHour).where(col(SubscriptionHour.hour) < kept))
        # a signed-out /ui session's cookie has expired by then anyway
        ended = utcnow() - timedelta(seconds=UI_SESSION_SECONDS)
        await session.exec(delete(EndedUiSession).where(col(EndedUiSession.ended_at) < ended))
    if deliveries or events:
        logger.info(
            "retention purge",
            extra={"deliveries": deliveries, "events": events, "cutoff": cutoff.isoformat()},
        )
    return deliveries + events
