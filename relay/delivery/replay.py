"""Replay: a subscription's matching stored events, sent again (``POST …/replay``).

The request is written to the database first (a ``replays`` row), so a Redis outage cannot
lose it; the workers then work through it in batches (``ReplayRunner.step``), each batch one
short write transaction that makes its deliveries due and advances the replay's cursor
together, so a killed worker resumes where the last committed batch ended. A batch is taken
only while the subscription has fewer than ``backlog`` deliveries waiting to be sent: a replay
of 100,000 events never fills the queue ahead of other subscriptions' first attempts, and
never holds a long transaction.

Every stored event whose Clever ``created`` time is in the window (both ends included) and
that matches the subscription now is sent again, whatever its earlier outcome, and events
stored before the subscription existed too: same body, same ``webhook-id``. An existing
delivery is re-sent as a manual attempt (counted apart from the retry schedule); one still
waiting to be sent is left as it is. For an ordered subscription the replayed deliveries are
chained like live ones (``relay.db.chains``), in event order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from relay.db import Database, chains, utcnow
from relay.db.models import WAITING, Bootstrap, Delivery, Event, Replay, Subscription
from relay.db.tables import insert_pending, table_of
from relay.delivery.redeliver import resend_now
from relay.fanout.subscribers import Subscriber, subscriber
from relay.queue import Job, RedisQueue

Row = Any  # an events row: id, type, district_id, record_id, created, body


def _window(since: datetime, until: datetime, after: tuple[datetime, str] | None) -> Any:
    events = table_of(Event)
    query = (
        sa.select(
            events.c.id,
            events.c.type,
            events.c.district_id,
            events.c.record_id,
            events.c.created,
            events.c.body,
        )
        .where(events.c.created >= since)
        .where(events.c.created <= until)
        .where(events.c.owner.is_(None))  # Clever's events, not the relay's own
        .order_by(events.c.created, events.c.id)
    )
    if after is not None:
        query = query.where(sa.tuple_(events.c.created, events.c.id) > sa.tuple_(*after))
    return query


def _matching(rows: Sequence[Row], wanted: Subscriber) -> list[Row]:
    return [r for r in rows if wanted.filter.matches(json.loads(r.body), r.district_id)]


async def request_replay(
    db: Database, subscription: Subscription, since: datetime, until: datetime, batch: int
) -> int:
    """Count the events the replay will send (short read transactions, ``batch`` at a time),
    then write the request; returns the count."""
    wanted, matched = subscriber(subscription), 0
    after: tuple[datetime, str] | None = None
    while True:
        async with db.read() as session:
            conn = await session.connection()
            rows = (await conn.execute(_window(since, until, after).limit(batch))).all()
        matched += len(_matching(rows, wanted))
        if len(rows) < batch:
            break
        after = (rows[-1].created, rows[-1].id)
    async with db.write() as session:
        session.add(
            Replay(subscription_id=subscription.id, since=since, until=until, matched=matched)
        )
    return matched


async def oldest_with_room(
    db: Database, model: type[Replay | Bootstrap], backlog: int
) -> int | None:
    """The oldest open request (a replay or a bootstrap) whose subscription has fewer than
    ``backlog`` deliveries queued to be sent: its deliveries go first, and the request goes
    on as they do."""
    async with db.read() as session:
        open_ = (
            await session.exec(
                select(model.id, model.subscription_id)
                .where(col(model.done).is_(False))
                .order_by(col(model.id))
                .limit(50)
            )
        ).all()
    for request_id, subscription_id in open_:
        if request_id is not None and await _queued(db, subscription_id, backlog) < backlog:
            return request_id
    return None


async def _queued(db: Database, subscription_id: str, limit: int) -> int:
    """The subscription's deliveries queued to be sent (counted up to ``limit``)."""
    deliveries = table_of(Delivery)
    queued = (
        sa.select(deliveries.c.id)
        .where(deliveries.c.subscription_id == subscription_id)
        .where(deliveries.c.status.in_(WAITING))
        .where(deliveries.c.next_attempt_at.is_not(None))
        .limit(limit)
        .subquery()
    )
    async with db.read() as session:
        conn = await session.connection()
        count = await conn.execute(sa.select(sa.func.count()).select_from(queued))
        return int(count.scalar_one())


class ReplayRunner:
    """Works through the open replays, one batch per step (``relay.loops.supervise``)."""

    def __init__(
        self, db: Database, queue: RedisQueue, *, batch: int, backlog: int, idle: float
    ) -> None:
        self.db = db
        self.queue = queue
        self.batch = batch
        self.backlog = backlog
        self.idle = idle

    async def step(self) -> float:
        """One batch of the oldest open replay whose subscription has room; returns the
        pause before the next step."""
        replay_id = await oldest_with_room(self.db, Replay, self.backlog)
        if replay_id is None:
            return self.idle
        await self.queue.enqueue(await self._next_batch(replay_id))
        return 0.0

    async def _next_batch(self, replay_id: int) -> list[Job]:
        """One batch in one transaction: its deliveries due (or chained) and the cursor on."""
        async with self.db.write() as session:
            replay = (
                await session.exec(
                    select(Replay).where(col(Replay.id) == replay_id).with_for_update()
                )
            ).first()
            if replay is None or replay.done:
                return []  # another worker finished it meanwhile
            sub = await session.get(Subscription, replay.subscription_id)
            conn = await session.connection()
            after = (
                (replay.after_created, replay.after_id or "")
                if replay.after_created is not None
                else None
            )
            query = _window(replay.since, replay.until, after).limit(self.batch)
            rows = (await conn.execute(query)).all()
            matched = [] if sub is None else _matching(rows, subscriber(sub))
            jobs = await _resend(conn, sub, matched, utcnow()) if matched and sub else []
            if rows:
                replay.after_created, replay.after_id = rows[-1].created, rows[-1].id
            replay.requeued += len(matched)
            replay.done = len(rows) < self.batch or sub is None
            replay.updated_at = utcnow()
            session.add(replay)
        return jobs


async def _resend(
    conn: AsyncConnection, sub: Subscription, rows: Sequence[Row], now: datetime
) -> list[Job]:
    """Make the deliveries of ``rows`` (events, in order) to ``sub`` due now: new ones
    pending, ended ones as a manual attempt; chained for an ordered subscription."""
    deliveries = table_of(Delivery)
    existing = {
        r.event_id: r
        for r in await conn.execute(
            sa.select(deliveries.c.id, deliveries.c.event_id, deliveries.c.status)
            .where(deliveries.c.subscription_id == sub.id)
            .where(deliveries.c.event_id.in_([r.id for r in rows]))
        )
    }
    tails: dict[tuple[str, str], int] = {}
    if sub.ordered:
        for district in {r.district_id for r in rows}:
            records = {r.record_id for r in rows if r.district_id == district and r.record_id}
            tails |= await chains.chain_tails(conn, district, {sub.id}, records)
    ended = [e.id for e in existing.values() if e.status not in WAITING]
    resent = await resend_now(conn, now, deliveries.c.id.in_(ended)) if ended else []
    jobs = {j.delivery_id: j for j in resent}
    fresh = [(sub.id, r.id, r.type) for r in rows if r.id not in existing]
    new_ids = {e: i for (_, e), i in (await insert_pending(conn, fresh, now)).items()}
    jobs |= {i: Job(i, 1, now) for i in new_ids.values()}
    if sub.ordered:
        ids = {e: int(d.id) for e, d in existing.items()} | new_ids
        sequence = [
            ((sub.id, r.record_id), ids[r.id], ids[r.id] in jobs)
            for r in rows
            if r.record_id and r.id in ids
        ]
        waiting = await chains.link(conn, sequence, tails)
        jobs = {i: j for i, j in jobs.items() if i not in waiting}
    return sorted(jobs.values(), key=lambda j: j.delivery_id)
