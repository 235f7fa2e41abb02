"""Deliveries made directly in the database, and what the tests read back about them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import col, select

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, Event, Subscription
from relay.queue import Job
from workers.context import WorkerContext


async def run_job(app: WorkerContext, delivery_id: int, attempt: int) -> str:
    """What a delivery consumer does for one claimed job: load its attempt, then run it."""
    (loaded,) = await app.pipeline.load([Job(delivery_id, attempt)])
    return await app.pipeline.run(loaded)


async def add_deliveries(db: Database, subs: Sequence[Subscription], count: int) -> list[int]:
    """``count`` events, each with a pending delivery to every subscription in ``subs``."""
    now = utcnow()
    ids: list[int] = []
    async with db.write() as session:
        first = int((await session.exec(select(func.count()).select_from(Event))).one())
        for n in range(first, first + count):
            event_id = f"{n:024x}"
            body = {"id": event_id, "type": "users.updated", "data": {"object": {}}}
            session.add(
                Event(
                    id=event_id,
                    district_id="d1",
                    type="users.updated",
                    created=now,
                    body=json.dumps(body | {"district": "d1"}),
                )
            )
            for sub in subs:
                delivery = Delivery(
                    subscription_id=sub.id,
                    event_id=event_id,
                    event_type="users.updated",
                    next_attempt_at=now,
                )
                session.add(delivery)
                await session.flush()
                assert delivery.id is not None
                ids.append(delivery.id)
    return ids


async def delivery(db: Database, delivery_id: int) -> tuple[Delivery, list[DeliveryAttempt]]:
    async with db.read() as session:
        row = await session.get(Delivery, delivery_id)
        attempts = (
            await session.exec(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(col(DeliveryAttempt.id))
            )
        ).all()
    assert row is not None
    return row, list(attempts)


async def count_status(db: Database, status: str, subscription_id: str | None = None) -> int:
    query = select(func.count()).select_from(Delivery).where(Delivery.status == status)
    if subscription_id is not None:
        query = query.where(Delivery.subscription_id == subscription_id)
    async with db.read() as session:
        return int((await session.exec(query)).one())
