"""Bootstrap: a subscription sent the roster (``POST /v1/subscriptions/{id}/bootstrap``).

A team that subscribes late needs the records that exist before the changes mean anything;
replay only has the events still stored. A bootstrap sends one ``<type>.created`` per roster
record the subscription's filters match, in Clever's event shape with ``"source":
"snapshot"`` and an id of its own (so the ``webhook-id`` is unique per subscription, record
and bootstrap), then whatever happens next. Nothing is read from Clever.

Like a replay, the request is written first (a ``bootstraps`` row) and the workers work
through it in batches, each one write transaction, only while the subscription has fewer
than ``backlog`` deliveries waiting: 100,000 records never fill the queue ahead of other
subscriptions. A batch locks the districts of its records first, as a page store does, so
for an ordered subscription a record's snapshot and its live events are chained in the order
their transactions commit: a snapshot is never sent after an event that came later.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db import Database, chains, utcnow
from relay.db.districts import locked_district
from relay.db.models import Bootstrap, EventSource, Record, Subscription
from relay.db.tables import insert_pending, table_of
from relay.delivery.replay import oldest_with_room
from relay.fanout.outbox import Prepared, insert_events
from relay.queue import Job, RedisQueue
from relay.roster.diff import synthetic

_RECORDS = table_of(Record)
_KEY = (_RECORDS.c.district_id, _RECORDS.c.type, _RECORDS.c.id)


def roster_filter(sub: Subscription) -> Any:
    """The subscription's filters as a condition on the roster, for a ``created`` event of
    each record (``relay.fanout.matching``'s rules: a record tied to no school passes a
    school filter, a record that is not a user passes a role filter); None: nothing."""
    if sub.actions and "created" not in sub.actions:
        return None
    conditions: list[Any] = []
    if sub.record_types:
        conditions.append(_RECORDS.c.type.in_(sub.record_types))
    if sub.districts:
        conditions.append(_RECORDS.c.district_id.in_(sub.districts))
    if sub.schools:
        listed = [_RECORDS.c.schools.contains(f" {s} ", autoescape=True) for s in sub.schools]
        conditions.append(sa.or_(_RECORDS.c.schools == "", *listed))
    if sub.roles:
        held = [_RECORDS.c.roles.contains(f" {r} ", autoescape=True) for r in sub.roles]
        conditions.append(sa.or_(_RECORDS.c.type != "users", *held))
    return sa.and_(sa.true(), *conditions)


async def request_bootstrap(session: AsyncSession, sub: Subscription) -> int:
    """Count the records a bootstrap of ``sub`` will send and write the request, in the
    caller's transaction; returns the count."""
    wanted = roster_filter(sub)
    matched = 0
    if wanted is not None:
        count = sa.select(sa.func.count()).select_from(_RECORDS).where(wanted)
        matched = int((await (await session.connection()).execute(count)).scalar_one())
    session.add(Bootstrap(subscription_id=sub.id, matched=matched, done=matched == 0))
    return matched


class BootstrapRunner:
    """Works through the open bootstraps, one batch per step (``relay.loops.supervise``)."""

    def __init__(
        self, db: Database, queue: RedisQueue, *, batch: int, backlog: int, idle: float
    ) -> None:
        self.db = db
        self.queue = queue
        self.batch = batch
        self.backlog = backlog
        self.idle = idle

    async def step(self) -> float:
        """One batch of the oldest open bootstrap whose subscription has room; returns the
        pause before the next step."""
        bootstrap_id = await oldest_with_room(self.db, Bootstrap, self.backlog)
        if bootstrap_id is None:
            return self.idle
        await self.queue.enqueue(await self._next_batch(bootstrap_id))
        return 0.0

    async def _next_batch(self, bootstrap_id: int) -> list[Job]:
        async with self.db.write() as session:
            boot = (
                await session.exec(
                    select(Bootstrap).where(col(Bootstrap.id) == bootstrap_id).with_for_update()
                )
            ).first()
            if boot is None or boot.done:
                return []  # another worker finished it meanwhile
            sub = await session.get(Subscription, boot.subscription_id)
            wanted = None if sub is None else roster_filter(sub)
            if sub is None or wanted is None:
                boot.done = True
                session.add(boot)
                return []
            conn = await session.connection()
            query = sa.select(*_KEY, _RECORDS.c.object).where(wanted).order_by(*_KEY)
            if boot.after_id is not None:
                after = (boot.after_district, boot.after_type, boot.after_id)
                query = query.where(sa.tuple_(*_KEY) > sa.tuple_(*after))
            query = query.limit(self.batch)
            first = (await conn.execute(query)).all()
            # the districts locked as a page store locks them, then the rows read again
            districts = sorted({row.district_id for row in first})
            for district_id in districts:
                await locked_district(session, district_id)
            rows = []
            for row in (await conn.execute(query)).all():
                if row.district_id not in districts:
                    break  # a district not locked: the next batch starts there
                rows.append(row)
            jobs = await _snapshots(session, conn, sub, rows)
            if rows:
                boot.after_district, boot.after_type, boot.after_id = tuple(rows[-1])[:3]
            boot.requeued += len(rows)
            boot.done = len(first) < self.batch and len(rows) == len(first)
            boot.updated_at = utcnow()
            session.add(boot)
        return jobs


async def _snapshots(
    session: AsyncSession, conn: AsyncConnection, sub: Subscription, rows: list[Any]
) -> list[Job]:
    """A snapshot event per roster row, and its delivery to ``sub`` (chained behind the
    record's waiting deliveries for an ordered subscription)."""
    now = utcnow()
    by_district: dict[str, list[Prepared]] = defaultdict(list)
    for row in rows:
        event = synthetic(
            row.type,
            "created",
            json.loads(row.object),
            None,
            row.district_id,
            now,
            EventSource.SNAPSHOT,
            row.object,
        )
        by_district[row.district_id].append(event)
    jobs: list[Job] = []
    for district_id, events in by_district.items():
        await insert_events(session, district_id, events, now, EventSource.SNAPSHOT)
        tails: dict[tuple[str, str], int] = {}
        if sub.ordered:  # read (and locked) before the snapshots' deliveries exist
            records = {p.event.record_id for p in events}
            tails = await chains.chain_tails(conn, district_id, {sub.id}, records)
        pending = [(sub.id, p.event.id, p.event.type) for p in events]
        ids = await insert_pending(conn, pending, now)
        waiting: set[int] = set()
        if sub.ordered:
            sequence = [
                ((sub.id, p.event.record_id), ids[(sub.id, p.event.id)], True) for p in events
            ]
            waiting = await chains.link(conn, sequence, tails)
        jobs += [Job(i, 1, now) for i in sorted(ids.values()) if i not in waiting]
    return jobs
