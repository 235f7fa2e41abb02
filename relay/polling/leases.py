"""District poll leases: at most one poller per district across every worker process.

A lease is a row-level compare-and-set on ``districts.lease_owner``/``lease_until``: taking
one succeeds only if it is free or expired, so a worker killed with SIGKILL holds its
districts for at most one lease period. The ingest transaction re-checks the lease (and the
cursor) before storing, so a worker that stalled past its lease cannot store a stale page.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_
from sqlmodel import col, select, update

from relay.db import Database, utcnow
from relay.db.districts import update_leased
from relay.db.models import District, DistrictStatus

POLLABLE = (DistrictStatus.ACTIVE, DistrictStatus.GAP_DETECTED, DistrictStatus.ERROR)


async def due_districts(db: Database, limit: int) -> list[str]:
    now = utcnow()
    async with db.read() as session:
        rows = await session.exec(
            select(District.id)
            .where(col(District.status).in_(POLLABLE))
            .where(or_(col(District.poll_after).is_(None), col(District.poll_after) <= now))
            .where(or_(col(District.lease_until).is_(None), col(District.lease_until) < now))
            .order_by(col(District.poll_after))
            .limit(limit)
        )
        return list(rows.all())


async def acquire(db: Database, district_id: str, owner: str, seconds: float) -> bool:
    now = utcnow()
    async with db.write() as session:
        result = await session.exec(
            update(District)
            .where(col(District.id) == district_id)
            .where(col(District.status).in_(POLLABLE))
            # not before poll_after: another worker may have released it with a 429's reset
            # after our scan listed it as due
            .where(or_(col(District.poll_after).is_(None), col(District.poll_after) <= now))
            .where(
                or_(
                    col(District.lease_until).is_(None),
                    col(District.lease_until) < now,
                    col(District.lease_owner) == owner,
                )
            )
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
        )
        return bool(result.rowcount == 1)


async def renew(db: Database, district_id: str, owner: str, seconds: float) -> bool:
    async with db.write() as session:
        until = utcnow() + timedelta(seconds=seconds)
        return await update_leased(session, district_id, owner, lease_until=until)


async def release(
    db: Database, district_id: str, owner: str, *, poll_after: datetime | None = None
) -> None:
    async with db.write() as session:
        await update_leased(
            session, district_id, owner, lease_owner=None, lease_until=None, poll_after=poll_after
        )
