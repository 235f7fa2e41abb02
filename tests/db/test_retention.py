from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func
from sqlmodel import select

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Event
from relay.db.retention import purge_deliveries, purge_events


async def test_purge_keeps_recent_rows_and_waiting_deliveries(db: Database) -> None:
    now = utcnow()
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    statuses = [DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.RETRYING]
    async with db.write() as session:
        for n in range(30):
            when = old if n < 20 else recent
            event_id = f"{n:024x}"
            session.add(
                Event(
                    id=event_id,
                    district_id="d",
                    type="users.updated",
                    created=when,
                    received_at=when,
                    body="{}",
                )
            )
            status = statuses[n % 3]
            delivery = Delivery(
                id=n + 1,
                subscription_id="sub",
                event_id=event_id,
                event_type="users.updated",
                status=status,
                created_at=when,
            )
            session.add(delivery)
            session.add(DeliveryAttempt(delivery_id=n + 1, attempted_at=when, status_code=500))
        session.add(
            Event(
                id="f" * 24,
                district_id="d",
                type="users.updated",
                created=old,
                received_at=old,
                body="{}",
            )
        )  # an old event no one subscribed to

    cutoff = now - timedelta(days=30)
    purged = await purge_deliveries(db, cutoff, batch=4)
    waiting_old = sum(1 for n in range(20) if statuses[n % 3] == DeliveryStatus.RETRYING)
    assert purged == 20 - waiting_old
    assert await purge_events(db, cutoff, batch=4) == 20 - waiting_old + 1

    async with db.read() as session:
        deliveries = (await session.exec(select(func.count()).select_from(Delivery))).one()
        attempts = (await session.exec(select(func.count()).select_from(DeliveryAttempt))).one()
        events = (await session.exec(select(func.count()).select_from(Event))).one()
    assert deliveries == 10 + waiting_old
    assert attempts == 10 + waiting_old
    assert events == 10 + waiting_old
