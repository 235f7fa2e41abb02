"""A district's sync: Clever's Data API read whole and compared with the roster.

Clever's documented way to start, and its remedy for a gap (``clever-notes.md``, "The Data
API"): take the events cursor first (``ending_before=last&limit=1``), read every record type,
then poll on from that cursor. Each difference with the roster is stored as a synthetic event
(``relay.roster.diff``) with its deliveries and the roster change, one transaction per Data
API page, so ordered subscriptions, filters and retries apply as to Clever's own events.

It runs in the district's poller, under its lease (polling waits), in steps that each commit
their progress on the ``syncs`` row: the cursor taken, then per record type the last id read,
then, once the type was read whole, its deletes (records the roster holds that this sync did
not read) in chunks. A worker killed at any point leaves the row where its last step
committed; whoever takes the lease next goes on from there. A type's deletes are never worked
out before its last page was read, so nothing is sent as deleted that Clever still has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from relay._exceptions import CleverResponseError, LeaseLost
from relay.clever.client import CleverClient
from relay.clever.events import indexed
from relay.clever.records import DATA_TYPES, RecordsPage
from relay.db import Database, utcnow
from relay.db.districts import locked_district
from relay.db.models import District, DistrictStatus, EventSource, Sync, SyncState
from relay.db.tables import table_of
from relay.fanout import operational
from relay.fanout.outbox import Prepared, insert_deliveries, insert_events
from relay.queue import Job, RedisQueue
from relay.roster import table
from relay.roster.diff import previous_attributes, synthetic

logger = logging.getLogger("relay.sync")

T = TypeVar("T")
Step = Callable[[AsyncSession, datetime], Awaitable[T]]

_SYNCS = table_of(Sync)
_DISTRICTS = table_of(District)


@dataclass(frozen=True)
class SyncContext:
    """What a sync needs of its worker."""

    db: Database
    clever: CleverClient
    queue: RedisQueue
    worker_id: str
    lease_seconds: float
    page_size: int = 1000
    #: records removed per transaction once a type was read whole
    delete_chunk: int = 1000


class DistrictSync:
    """Run (or go on with) the district's running sync: ``await DistrictSync(...).run()``."""

    def __init__(self, ctx: SyncContext, district: District) -> None:
        self.ctx = ctx
        self.district_id = district.id
        self.token = district.token
        self.sync_id = district.sync_id
        self.log_extra = {"district_id": district.id, "worker": ctx.worker_id}
        self._district = district  # as the current step's transaction locked it

    async def run(self) -> None:
        sync = await self._load()
        logger.info(
            "sync running",
            extra=self.log_extra | {"sync_id": sync.id, "reason": sync.reason},
        )
        if not sync.cursor_taken:
            cursor = await self.ctx.clever.latest_event_id(self.token)

            async def take(session: AsyncSession, now: datetime) -> None:
                await _note(session, sync, cursor_taken=True, events_cursor=cursor)

            await self._step(take)
        while await self._advance(sync):
            pass
        await self._step(lambda session, now: self._finish(session, sync, now))
        logger.info(
            "sync succeeded",
            extra=self.log_extra
            | {
                "sync_id": sync.id,
                "records_read": sync.records_read,
                # not "created": a LogRecord attribute (logging refuses to overwrite it)
                "records_created": sync.created,
                "records_updated": sync.updated,
                "records_deleted": sync.deleted,
            },
        )

    async def _advance(self, sync: Sync) -> bool:
        """One step of the sync; False when every type was read and its deletes stored."""
        record_type = sync.record_type or DATA_TYPES[0]
        if sync.deleting:
            removed = await self._step(
                lambda session, now: self._deletes(session, sync, record_type, now)
            )
            if removed is not None:  # a chunk went (its jobs may be none): maybe more
                return True
            return await self._next_type(sync, record_type)
        try:
            page = await self.ctx.clever.list_records(
                self.token, record_type, starting_after=sync.after, limit=self.ctx.page_size
            )
        except CleverResponseError as exc:
            if exc.status_code not in (403, 404) or record_type == "districts":
                raise  # every district token reads its district: not a type to skip
            # the app may not read this type (Clever's 404 for resources): nothing of it is
            # compared, and nothing of it deleted
            logger.warning(
                "sync skipped a record type Clever would not list",
                extra=self.log_extra | {"record_type": record_type, "error": str(exc)},
            )
            return await self._next_type(sync, record_type)
        await self._step(lambda session, now: self._read(session, sync, record_type, page, now))
        return True

    # -- steps: each one transaction -----------------------------------------------------------
    async def _read(
        self, session: AsyncSession, sync: Sync, record_type: str, page: RecordsPage, now: datetime
    ) -> list[Job]:
        """One Data API page compared with the roster: its differences stored as events."""
        conn = await session.connection()
        records = {indexed(str(r["id"])): r for r in page.records}
        stored = await table.known(conn, self.district_id, record_type, list(records))
        events: list[Prepared] = []
        changes: list[table.Change] = []
        updated = 0
        for record_id, record in records.items():
            before = stored.get(record_id)
            text = table.dumps(record)
            event: Prepared | None = None
            if before is not None:
                if before == text:
                    continue  # stored as Clever sent it last time: unchanged
                old = json.loads(before)
                if old == record:
                    continue  # the same record, its keys in another order
                updated += 1
                previous = previous_attributes(old, record)
                event = self._event(record_type, "updated", record, previous, now, text)
            elif sync.emit_created:
                event = self._event(record_type, "created", record, None, now, text)
            if event is not None:
                events.append(event)
            changes.append(table.record_change(record_type, record, event and event.event.id, text))
        created = len(changes) - updated if sync.emit_created else 0
        due = await self._store(session, events, now)
        await table.apply(conn, self.district_id, changes, now, sync_id=sync.id)
        await table.mark_read(conn, self.district_id, record_type, list(records), _id(sync))
        await _note(
            session,
            sync,
            record_type=record_type,
            after=page.last_id or sync.after,
            # only an empty page ends the type (not a short one: Clever may answer fewer
            # than asked); then what the roster holds that was not read is gone
            deleting=not page.records,
            records_read=sync.records_read + len(records),
            created=sync.created + created,
            updated=sync.updated + updated,
        )
        return due

    async def _deletes(
        self, session: AsyncSession, sync: Sync, record_type: str, now: datetime
    ) -> list[Job] | None:
        """A chunk of the type's records that this sync did not read, each removed with a
        ``deleted`` event; None when there are none left."""
        conn = await session.connection()
        gone = await table.unseen(
            conn, self.district_id, record_type, _id(sync), self.ctx.delete_chunk
        )
        if not gone:
            return None
        events = [self._event(record_type, "deleted", json.loads(o), None, now, o) for _, o in gone]
        due = await self._store(session, events, now)
        removed = [
            table.Change(record_type, record_id, None, event.event.id, "", "")
            for (record_id, _), event in zip(gone, events, strict=True)
        ]
        await table.apply(conn, self.district_id, removed, now)
        await _note(session, sync, deleted=sync.deleted + len(gone))
        return due

    async def _next_type(self, sync: Sync, record_type: str) -> bool:
        """Go on to the type after ``record_type``; False when that was the last."""
        index = DATA_TYPES.index(record_type) + 1
        if index >= len(DATA_TYPES):
            return False

        async def move(session: AsyncSession, now: datetime) -> None:
            await _note(session, sync, record_type=DATA_TYPES[index], after=None, deleting=False)

        await self._step(move)
        return True

    async def _finish(self, session: AsyncSession, sync: Sync, now: datetime) -> list[Job]:
        """The sync succeeded: the district polls on from the cursor taken first (or its
        own, if newer), active again, and the admin is told."""
        await _note(session, sync, state=SyncState.SUCCEEDED, finished_at=now, error=None)
        district = self._district
        cursor = district.cursor
        if sync.events_cursor is not None and (cursor is None or sync.events_cursor > cursor):
            cursor = sync.events_cursor
        # what happened before the sync began is in the roster now: not a gap
        seen = max(t for t in (district.caught_up_at, sync.started_at) if t is not None)
        values: dict[str, Any] = {
            "status": DistrictStatus.ACTIVE,
            "last_error": None,
            "cursor": cursor,
            "seeded": True,
            "caught_up": False,
            "caught_up_at": seen,
            "synced_at": now,
            "consecutive_failures": 0,
            "updated_at": now,
        }
        conn = await session.connection()
        await conn.execute(
            sa.update(_DISTRICTS).where(_DISTRICTS.c.id == self.district_id).values(values)
        )
        for name, value in values.items():
            setattr(district, name, value)
        notice = operational.district_notice(operational.DISTRICT_SYNCED, district, now, sync)
        return await operational.raise_notices(conn, [notice], now)

    # -- plumbing ------------------------------------------------------------------------------
    def _event(
        self,
        record_type: str,
        action: str,
        record: dict[str, Any],
        previous: dict[str, Any] | None,
        now: datetime,
        text: str,
    ) -> Prepared:
        return synthetic(
            record_type, action, record, previous, self.district_id, now, EventSource.SYNC, text
        )

    async def _store(
        self, session: AsyncSession, events: list[Prepared], now: datetime
    ) -> list[Job]:
        if not events:
            return []
        inserted = await insert_events(session, self.district_id, events, now, EventSource.SYNC)
        return await insert_deliveries(session, self.district_id, events, inserted, now)

    async def _load(self) -> Sync:
        async with self.ctx.db.read() as session:
            sync = await session.get(Sync, self.sync_id) if self.sync_id is not None else None
        if sync is None or sync.state != SyncState.RUNNING or sync.district_id != self.district_id:
            raise LeaseLost(f"district {self.district_id}: no running sync")
        return sync

    async def _step(self, work: Step[T]) -> T:
        """``work(session, now)`` in one write transaction with the district locked, if this
        worker still holds its lease and the sync still runs; the lease is extended with it,
        and the jobs it returns are queued once it has committed."""
        async with self.ctx.db.write() as session:
            district = await locked_district(session, self.district_id)
            if district is None or district.lease_owner != self.ctx.worker_id:
                raise LeaseLost(
                    f"district {self.district_id}: poll lease is held by another worker"
                )
            if district.status != DistrictStatus.SYNCING or district.sync_id != self.sync_id:
                raise LeaseLost(f"district {self.district_id}: the sync was ended meanwhile")
            self._district = district
            now = utcnow()
            result = await work(session, now)
            await (await session.connection()).execute(
                sa.update(_DISTRICTS)
                .where(_DISTRICTS.c.id == self.district_id)
                .values(lease_until=now + timedelta(seconds=self.ctx.lease_seconds))
            )
        if isinstance(result, list) and result:
            await self.ctx.queue.enqueue(result)
        return result


def _id(sync: Sync) -> int:
    assert sync.id is not None
    return sync.id


async def _note(session: AsyncSession, sync: Sync, **values: Any) -> None:
    """Write ``values`` on the sync row (and on the object the run works from)."""
    values["updated_at"] = utcnow()
    conn = await session.connection()
    await conn.execute(sa.update(_SYNCS).where(_SYNCS.c.id == sync.id).values(values))
    for name, value in values.items():
        setattr(sync, name, value)


async def fail(
    db: Database, district_id: str, worker_id: str, error: str, *, to: DistrictStatus
) -> list[Job]:
    """End the district's running sync as failed (it kept failing, or Clever refused the
    token): the district goes to ``to`` with the error, and the admin is told. A district
    that never had a cursor keeps the one the sync took, so it polls on from there."""
    now = utcnow()
    async with db.write() as session:
        district = await locked_district(session, district_id)
        if district is None or district.lease_owner != worker_id or district.sync_id is None:
            return []
        conn = await session.connection()
        sync = await session.get(Sync, district.sync_id)
        if sync is None or sync.state != SyncState.RUNNING:
            return []
        message = f"sync failed: {error}"
        await conn.execute(
            sa.update(_SYNCS)
            .where(_SYNCS.c.id == sync.id)
            .values(state=SyncState.FAILED, finished_at=now, error=error, updated_at=now)
        )
        sync.state, sync.finished_at, sync.error = SyncState.FAILED, now, error
        cursor = district.cursor or sync.events_cursor
        await conn.execute(
            sa.update(_DISTRICTS)
            .where(_DISTRICTS.c.id == district_id)
            .values(
                status=to,
                last_error=message,
                cursor=cursor,
                seeded=True,
                consecutive_failures=0,  # the failures were the sync's: polling starts afresh
                updated_at=now,
            )
        )
        district.status, district.last_error, district.cursor = to, message, cursor
        notice = operational.district_notice(operational.DISTRICT_SYNC_FAILED, district, now, sync)
        jobs = await operational.raise_notices(conn, [notice], now)
    logger.warning("sync failed", extra={"district_id": district_id, "error": error})
    return jobs
