"""District rows as the poller changes them: under its lease, or with the row locked.

Every change a poller makes to its district is guarded by the lease (``lease_owner`` is this
worker), so a worker that stalled past its lease, and whose district another worker took
over, changes nothing: its statement matches no row. ``update_leased`` is that guard, in one
place.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db.models import District


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


async def locked_district(session: AsyncSession, district_id: str) -> District | None:
    """The district row, locked for this write transaction (SQLite's BEGIN IMMEDIATE already
    locks the whole database; PostgreSQL needs FOR UPDATE)."""
    query = select(District).where(District.id == district_id).with_for_update()
    return (await session.exec(query)).first()
