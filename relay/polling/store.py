"""Storing a page of Clever events: events, their deliveries and the cursor advance commit in
one transaction, or none of them do.

That single transaction is what makes the relay lossless: a worker killed mid-page leaves the
cursor where it was, so the page is fetched again; an event is stored once (its Clever id is
the primary key); and there is never an event without its deliveries (the outbox rows that
the poller and the reconciler turn into queued jobs, ``relay.queue``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlmodel.ext.asyncio.session import AsyncSession

from relay._exceptions import LeaseLost
from relay.clever.events import CleverEvent
from relay.db import Database, chains, utcnow
from relay.db.districts import locked_district, write_page_fields
from relay.db.models import District, DistrictStatus, Event
from relay.db.tables import insert_ignoring_duplicates, insert_pending, table_of
from relay.delivery.signing import webhook_body
from relay.fanout import operational
from relay.fanout.matching import Facts
from relay.fanout.subscribers import load_subscribers, subscribers_of
from relay.polling.leases import POLLABLE
from relay.queue import Job

logger = logging.getLogger("relay.ingest")

# A gap is reported over these; paused and unauthorized (set by an operator or a 401 while
# the page was in flight) stay as they are.
_GAP_OVERRIDES = (DistrictStatus.ACTIVE, DistrictStatus.ERROR, DistrictStatus.GAP_DETECTED)


@dataclass(frozen=True)
class PageResult:
    stored: int
    due: list[Job]
    #: the district row as this transaction left it (the poller works from it until the next
    #: page or until someone else changes the row)
    district: District


async def store_page(
    db: Database,
    *,
    district_id: str,
    lease_owner: str,
    expected_cursor: str | None,
    events: Sequence[CleverEvent],
    caught_up: bool,
    lease_seconds: float,
    gap: str | None = None,
) -> PageResult:
    """Store ``events`` and advance the cursor past them, if we still own the poll.

    Raises LeaseLost (and stores nothing) if another worker holds the lease, the cursor is
    no longer ``expected_cursor`` (the page we fetched may already be stored, or stale) or the
    district is no longer to be polled (paused, say, since the poller last read it).
    """
    # what needs no database is done before the write lock is taken (on SQLite it stops every
    # other writer, the record transactions of delivery among them): each event's webhook body
    # and the facts its subscriptions are matched on
    prepared = [
        Prepared(e, webhook_body(e.raw, district_id).decode(), Facts.of(e.raw, district_id))
        for e in events
    ]
    async with db.write() as session:
        district = await locked_district(session, district_id)
        if district is None or district.lease_owner != lease_owner:
            raise LeaseLost(f"district {district_id}: poll lease is held by another worker")
        if district.cursor != expected_cursor:
            raise LeaseLost(f"district {district_id}: cursor moved while the page was fetched")
        if district.status not in POLLABLE:
            raise LeaseLost(f"district {district_id}: status is {district.status}")
        # taken with the write lock held, so the deliveries' due time is within this
        # transaction's span (the reconciler's window relies on it: ReconcileTuning.margin)
        now = utcnow()

        inserted = await _insert_events(session, district_id, prepared, now)
        due = await _insert_deliveries(session, district_id, prepared, inserted, now)

        if events:
            newest = max(events, key=lambda e: e.id)
            district.cursor = newest.id
            district.last_event_at = newest.created
        district.last_polled_at = now
        district.caught_up = caught_up
        if caught_up:
            district.caught_up_at = now
        district.lease_until = now + timedelta(seconds=lease_seconds)
        district.consecutive_failures = 0
        district.updated_at = now
        notice = _change_status(district, gap, now)
        await write_page_fields(session, district)
        if notice is not None:
            due += await operational.raise_notices(await session.connection(), [notice], now)
    return PageResult(stored=len(inserted), due=due, district=district)


def _change_status(district: District, gap: str | None, now: datetime) -> operational.Notice | None:
    """A gap is reported (once: a district already in ``gap_detected`` stays quiet); a
    district in ``error`` whose page came through has recovered; an active one's last error
    is cleared (``gap_detected`` keeps its explanation until acknowledged)."""
    if gap is not None and district.status in _GAP_OVERRIDES:
        changed = district.status != DistrictStatus.GAP_DETECTED
        district.status, district.last_error = DistrictStatus.GAP_DETECTED, gap
        return (
            operational.district_notice(operational.DISTRICT_GAP_DETECTED, district, now)
            if changed
            else None
        )
    if district.status == DistrictStatus.ERROR:
        district.status, district.last_error = DistrictStatus.ACTIVE, None
        return operational.district_notice(operational.DISTRICT_RECOVERED, district, now)
    if district.status == DistrictStatus.ACTIVE:
        district.last_error = None  # a passing failure (one 5xx, a 429) is over
    return None


class Prepared(NamedTuple):
    """An event of the page with what is worked out before the write transaction."""

    event: CleverEvent
    body: str  # the webhook body, as stored and sent
    facts: Facts  # what subscriptions' filters are matched on


async def _insert_events(
    session: AsyncSession, district_id: str, prepared: Sequence[Prepared], now: datetime
) -> set[str]:
    if not prepared:
        return set()
    rows = [
        {
            "id": e.id,
            "district_id": district_id,
            "type": e.type,
            "record_id": e.record_id,
            "created": e.created,
            "received_at": now,
            "body": body,
        }
        for e, body, _ in prepared
    ]
    stmt = insert_ignoring_duplicates(session, Event).returning(table_of(Event).c.id)
    result = await (await session.connection()).execute(stmt, rows)
    return set(result.scalars().all())


async def _insert_deliveries(
    session: AsyncSession,
    district_id: str,
    prepared: Sequence[Prepared],
    inserted: set[str],
    now: datetime,
) -> list[Job]:
    """Deliveries for the events this transaction inserted (not for ones stored before)."""
    if not inserted:
        return []
    subscribers = await load_subscribers(session)
    fresh = sorted((p for p in prepared if p.event.id in inserted), key=lambda p: p.event.id)
    matched = [(p.event, s) for p in fresh for s in subscribers_of(p.facts, subscribers)]
    if not matched:
        return []
    conn = await session.connection()
    ordered = [(e, s.subscription_id) for e, s in matched if s.ordered]
    # the chains' tails are read (and locked) before this page's deliveries exist
    tails = await chains.chain_tails(
        conn, district_id, {s for _, s in ordered}, {e.record_id for e, _ in ordered}
    )
    rows = [(s.subscription_id, e.id, e.type) for e, s in matched]
    ids = await insert_pending(conn, rows, now)
    sequence = [((s, e.record_id), ids[(s, e.id)], True) for e, s in ordered if (s, e.id) in ids]
    waiting = await chains.link(conn, sequence, tails) if ordered else set()
    return [Job(i, 1, now) for i in sorted(ids.values()) if i not in waiting]
