"""Storing events with their deliveries: the transactional outbox every source of events
shares (a page of Clever's, a sync's differences).

An event is stored once (its id is the primary key), and in the same transaction as the
deliveries it fans out to, so there is never an event without its deliveries; the caller
queues the returned first attempts once its transaction has committed (the reconciler
queues them if that is lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlmodel.ext.asyncio.session import AsyncSession

from relay.clever.events import CleverEvent
from relay.db import chains
from relay.db.models import Event
from relay.db.tables import insert_ignoring_duplicates, insert_pending, table_of
from relay.fanout.matching import Facts
from relay.fanout.subscribers import load_subscribers, subscribers_of
from relay.queue import Job


class Prepared(NamedTuple):
    """An event with what is worked out before the write transaction."""

    event: CleverEvent
    body: str  # the webhook body, as stored and sent
    facts: Facts  # what subscriptions' filters are matched on


async def insert_events(
    session: AsyncSession,
    district_id: str,
    prepared: Sequence[Prepared],
    now: datetime,
    source: str | None = None,
) -> set[str]:
    """Insert the events not stored yet; returns the ids this transaction inserted.
    ``source`` None leaves the column to its default (``clever``)."""
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
    if source is not None:
        for row in rows:
            row["source"] = source
    stmt = insert_ignoring_duplicates(session, Event).returning(table_of(Event).c.id)
    result = await (await session.connection()).execute(stmt, rows)
    return set(result.scalars().all())


async def insert_deliveries(
    session: AsyncSession,
    district_id: str,
    prepared: Sequence[Prepared],
    inserted: set[str],
    now: datetime,
) -> list[Job]:
    """Deliveries for the events this transaction inserted (not for ones stored before);
    ordered subscriptions chain each record's deliveries in event-id order."""
    if not inserted:
        return []
    subscribers = await load_subscribers(session)
    fresh = sorted((p for p in prepared if p.event.id in inserted), key=lambda p: p.event.id)
    matched = [(p.event, s) for p in fresh for s in subscribers_of(p.facts, subscribers)]
    if not matched:
        return []
    conn = await session.connection()
    ordered = [(e, s.subscription_id) for e, s in matched if s.ordered]
    # the chains' tails are read (and locked) before these deliveries exist
    tails = await chains.chain_tails(
        conn, district_id, {s for _, s in ordered}, {e.record_id for e, _ in ordered}
    )
    rows = [(s.subscription_id, e.id, e.type) for e, s in matched]
    ids = await insert_pending(conn, rows, now)
    sequence = [((s, e.record_id), ids[(s, e.id)], True) for e, s in ordered if (s, e.id) in ids]
    waiting = await chains.link(conn, sequence, tails) if ordered else set()
    return [Job(i, 1, now) for i in sorted(ids.values()) if i not in waiting]
