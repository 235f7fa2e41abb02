"""District rows as the poller changes them: under its lease, or with the row locked.

Every change a poller makes to its district is guarded by the lease (``lease_owner`` is this
worker), so a worker that stalled past its lease, and whose district another worker took
over, changes nothing: its statement matches no row. ``update_leased`` is that guard, in one
place.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import bindparam
from sqlmodel import col, update
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db.models import District
from relay.db.tables import table_of


async def update_leased(
    session: AsyncSession, district_id: str, owner: str, *conditions: Any, **values: Any
) -> bool:
    """Set ``values`` on the district if ``owner`` holds its lease (and ``conditions``
    hold); True if it did."""
    result = await session.exec(
        update(District)
        .where(col(District.id) == district_id)
        .where(col(District.lease_owner) == owner)
        .where(*conditions)
        .values(**values)
    )
    return bool(result.rowcount == 1)


_TABLE = table_of(District)
# Built once: a page store is a poller's hot path (ORM statements were rebuilt and compiled
# per call, and their rows became session-tracked objects).
_LOCKED = sa.select(_TABLE).where(_TABLE.c.id == bindparam("b_id")).with_for_update()
#: what a page store changes in its district
PAGE_FIELDS = (
    "cursor",
    "last_event_at",
    "last_polled_at",
    "caught_up",
    "caught_up_at",
    "lease_until",
    "consecutive_failures",
    "updated_at",
    "status",
    "last_error",
    "sync_id",
)
_PAGE_UPDATE = (
    sa.update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}", type_=_TABLE.c[name].type) for name in PAGE_FIELDS})
)


async def locked_district(session: AsyncSession, district_id: str) -> District | None:
    """The district row, locked for this write transaction (SQLite's BEGIN IMMEDIATE already
    locks the whole database; PostgreSQL needs FOR UPDATE), as a detached ``District``: write
    changes back with ``write_page_fields``, not ``session.add``."""
    conn = await session.connection()
    row = (await conn.execute(_LOCKED, {"b_id": district_id})).mappings().first()
    return None if row is None else District(**row)


async def write_page_fields(session: AsyncSession, district: District) -> None:
    """Write ``PAGE_FIELDS`` of a district read with ``locked_district``."""
    values = {f"b_{name}": getattr(district, name) for name in PAGE_FIELDS}
    conn = await session.connection()
    await conn.execute(_PAGE_UPDATE, values | {"b_id": district.id})
