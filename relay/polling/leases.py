"""District poll leases: at most one poller per district across every worker process.

A lease is a row-level compare-and-set on ``districts.lease_owner``/``lease_until``: taking
one succeeds only if it is free or expired, so a worker killed with SIGKILL holds its
districts for at most one lease period. A worker renews all the leases it holds together
(``renew_held``, driven by ``relay.polling.keeper``). The ingest transaction re-checks the
lease (and the cursor) before storing, so a worker that stalled past its lease cannot store a
stale page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select, update

from relay.db import Database, utcnow
from relay.db.districts import update_leased
from relay.db.models import District, DistrictStatus
from relay.db.tables import table_of
from relay.db.types import UTCDateTime

POLLABLE = (
    DistrictStatus.ACTIVE,
    DistrictStatus.GAP_DETECTED,
    DistrictStatus.ERROR,
    DistrictStatus.SYNCING,  # a sync runs under the lease, in the poller
)
#: districts per renewal statement (bind parameters stay well under any driver's limit)
RENEW_CHUNK = 500


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


@dataclass(frozen=True)
class Renewal:
    #: the ``updated_at`` of each district whose lease was extended
    renewed: dict[str, datetime]
    #: still the owner's, but locked by a transaction storing a page right now (which
    #: extends the lease itself): left alone rather than waited for
    busy: set[str]


async def renew_held(
    db: Database,
    owner: str,
    district_ids: Sequence[str],
    seconds: float,
    polled: Mapping[str, datetime],
) -> Renewal:
    """Extend ``owner``'s leases on ``district_ids`` and record the quiet polls ``polled``
    (their time as ``last_polled_at`` and ``caught_up_at``: a quiet poll found the district
    caught up), in one transaction: a statement per 500 districts and one executemany, not a
    write per district per poll (``relay.polling.keeper``).

    A district missing from both ``renewed`` and ``busy`` is no longer this owner's to poll
    (another worker's lease, paused, unauthorized, deleted). Rows another transaction holds
    locked are skipped (PostgreSQL; SQLite has one writer at a time anyway): waiting for
    them, with a thousand rows locked meanwhile, once stalled every page store of the worker
    behind the renewal.
    """
    table = table_of(District)
    until = utcnow() + timedelta(seconds=seconds)
    renewed: dict[str, datetime] = {}
    async with db.write() as session:
        conn = await session.connection()
        for start in range(0, len(district_ids), RENEW_CHUNK):
            chunk = district_ids[start : start + RENEW_CHUNK]
            ours = (
                select(table.c.id)
                .where(table.c.id.in_(chunk))
                .where(table.c.lease_owner == owner)
                .where(table.c.status.in_(POLLABLE))
                .with_for_update(skip_locked=True)
            )
            rows = await conn.execute(
                update(table)
                .where(table.c.id.in_(ours))
                .values(lease_until=until)
                .returning(table.c.id, table.c.updated_at)
            )
            renewed.update((row[0], row[1]) for row in rows)
        # only rows this transaction now holds: the executemany never waits for a lock
        quiet = [{"b_id": i, "b_at": at} for i, at in polled.items() if i in renewed]
        if quiet:
            at = bindparam("b_at", type_=UTCDateTime)
            await conn.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(last_polled_at=at, caught_up_at=at),
                quiet,
            )
        busy = await _still_held(conn, owner, [i for i in district_ids if i not in renewed])
    return Renewal(renewed, busy)


async def _still_held(conn: AsyncConnection, owner: str, district_ids: list[str]) -> set[str]:
    """Which of ``district_ids`` are still ``owner``'s to poll (read without a lock)."""
    table = table_of(District)
    held: set[str] = set()
    for start in range(0, len(district_ids), RENEW_CHUNK):
        rows = await conn.execute(
            select(table.c.id)
            .where(table.c.id.in_(district_ids[start : start + RENEW_CHUNK]))
            .where(table.c.lease_owner == owner)
            .where(table.c.status.in_(POLLABLE))
        )
        held.update(rows.scalars())
    return held


async def release(
    db: Database, district_id: str, owner: str, *, poll_after: datetime | None = None
) -> None:
    async with db.write() as session:
        await update_leased(
            session, district_id, owner, lease_owner=None, lease_until=None, poll_after=poll_after
        )
