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
from datetime import timedelta

from relay._exceptions import LeaseLost
from relay.clever.events import CleverEvent
from relay.db import Database, utcnow
from relay.db.districts import locked_district, write_page_fields
from relay.db.models import District, DistrictStatus, Sync
from relay.delivery.signing import webhook_body
from relay.fanout import operational
from relay.fanout.matching import Facts
from relay.fanout.outbox import Prepared, insert_deliveries, insert_events
from relay.polling.leases import POLLABLE
from relay.queue import Job
from relay.roster import syncs, table

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
    resync_on_gap: bool = False,
) -> PageResult:
    """Store ``events`` and advance the cursor past them, if we still own the poll.

    Raises LeaseLost (and stores nothing) if another worker holds the lease, the cursor is
    no longer ``expected_cursor`` (the page we fetched may already be stored, or stale) or the
    district is no longer to be polled (paused, say, since the poller last read it). A gap
    with ``resync_on_gap`` starts a sync of the district in the same transaction.
    """
    # what needs no database is done before the write lock is taken (on SQLite it stops every
    # other writer, the record transactions of delivery among them): each event's webhook body
    # and the facts its subscriptions are matched on
    prepared = [
        Prepared(e, webhook_body(e.raw, district_id).decode(), Facts.of(e.raw, district_id))
        for e in events
    ]
    changes = [table.change_of(e) for e in events]
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

        inserted = await insert_events(session, district_id, prepared, now)
        due = await insert_deliveries(session, district_id, prepared, inserted, now)
        conn = await session.connection()
        if inserted:
            fresh = (c for e, c in zip(events, changes, strict=True) if c and e.id in inserted)
            await table.apply(conn, district_id, fresh, now)

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
        told = _change_status(district, gap)
        if gap is not None and resync_on_gap and district.status == DistrictStatus.GAP_DETECTED:
            # the remedy at once: the district heals itself and returns to active
            district.sync_id = await syncs.begin(conn, district_id, syncs.GAP, now)
            district.status = DistrictStatus.SYNCING
        await write_page_fields(session, district)
        if told is not None:
            sync = await session.get(Sync, district.sync_id) if district.sync_id else None
            notice = operational.district_notice(told, district, now, sync)
            due += await operational.raise_notices(conn, [notice], now)
    return PageResult(stored=len(inserted), due=due, district=district)


def _change_status(district: District, gap: str | None) -> str | None:
    """A gap is reported (once: a district already in ``gap_detected`` stays quiet); a
    district in ``error`` whose page came through has recovered; an active one's last error
    is cleared (``gap_detected`` keeps its explanation until acknowledged or a sync heals
    it). Returns the operational event to raise, if any."""
    if gap is not None and district.status in _GAP_OVERRIDES:
        changed = district.status != DistrictStatus.GAP_DETECTED
        district.status, district.last_error = DistrictStatus.GAP_DETECTED, gap
        return operational.DISTRICT_GAP_DETECTED if changed else None
    if district.status == DistrictStatus.ERROR:
        district.status, district.last_error = DistrictStatus.ACTIVE, None
        return operational.DISTRICT_RECOVERED
    if district.status == DistrictStatus.ACTIVE:
        district.last_error = None  # a passing failure (one 5xx, a 429) is over
    return None
