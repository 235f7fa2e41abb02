"""Table-level helpers for Core statements.

The rule for SQL in this package: the hot paths (storing a page, loading and recording
attempts, claiming leases, the reconciler) use Core statements on ``table_of(Model)``, which
skip the ORM's identity map and object construction; everything else (the API, the CLI,
discovery) uses ORM objects, which read better and cost nothing that matters there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db.models import Delivery, DeliveryStatus


def table_of(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


async def insert_pending(
    conn: AsyncConnection, rows: Iterable[tuple[str, str, str]], now: datetime
) -> dict[tuple[str, str], int]:
    """New deliveries, due now, for (subscription id, event id, event type) rows (a delivery
    that exists already is left as it is); returns (subscription id, event id) → delivery id."""
    values = [
        {
            "subscription_id": subscription_id,
            "event_id": event_id,
            "event_type": event_type,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for subscription_id, event_id, event_type in rows
    ]
    if not values:
        return {}
    deliveries = table_of(Delivery)
    stmt = insert_ignoring_duplicates(conn, Delivery).returning(
        deliveries.c.id, deliveries.c.subscription_id, deliveries.c.event_id
    )
    return {(s, e): int(i) for i, s, e in (await conn.execute(stmt, values)).all()}


def insert_ignoring_duplicates(on: AsyncSession | AsyncConnection, model: type[SQLModel]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for whichever backend the session is on."""
    name = on.dialect.name if isinstance(on, AsyncConnection) else on.get_bind().dialect.name
    dialect = postgresql if name == "postgresql" else sqlite
    return dialect.insert(table_of(model)).on_conflict_do_nothing()
