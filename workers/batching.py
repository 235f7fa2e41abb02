"""Sharing the database and Redis work of concurrent deliver jobs.

A worker runs hundreds of deliver jobs at once. Each used to read its delivery in a
transaction of its own and record its attempt in another: two transactions (on PostgreSQL a
pre-ping, BEGIN, the statements and COMMIT each; on SQLite a turn at the single write lock)
per webhook. Now the jobs claimed together are read in one query (``load_deliveries``), and a
``Coalescer`` lets every job keep its own simple ``await record(attempt)`` while the jobs that
finish at about the same time share one transaction: the first caller starts a flush, and
whatever is submitted while that flush runs goes into the next one (group commit). Under light
load a batch is a single item and adds no delay; under heavy load batches grow to what the
database can absorb.

Correctness does not depend on batching: each recorded attempt is still its own
compare-and-set (``relay.delivery.outcomes``), and a job ends only after the transaction
holding its attempt committed, so a kill -9 loses at most attempts that run again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import sqlalchemy as sa
from sqlmodel import col, select

from relay.db import Database
from relay.db.models import Delivery, Event, Subscription
from relay.delivery.outcomes import AttemptRecord, Recorded, record_attempts
from relay.delivery.schedule import RetrySchedule
from relay.ingest import table_of

logger = logging.getLogger("relay.delivery")

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    """Runs ``bulk(items)`` (one result per item, in order) for items submitted concurrently.

    At most one bulk call runs at a time; items submitted meanwhile wait for the next one, up
    to ``max_batch`` per call. If a bulk call raises, its items are retried one by one, so one
    bad item cannot fail the jobs that merely shared its batch.
    """

    def __init__(
        self, bulk: Callable[[Sequence[In]], Awaitable[Sequence[Out]]], max_batch: int = 200
    ) -> None:
        self._bulk = bulk
        self._max_batch = max_batch
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        # a job cancelled while waiting (its timeout) cancels only its own future: its item
        # stays in the batch, which is harmless (the write is a compare-and-set)
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the jobs woken with this one submit theirs too
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._run(batch)

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self._bulk([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                logger.warning("batched database call failed; retrying its items one by one")
                for one in batch:
                    await self._run([one])
                return
            _, future = batch[0]
            if not future.done():
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """What a deliver job reads: the delivery's state, its event's body (None if the event
    is gone) and its subscription (None if deleted)."""

    status: str
    attempts: int
    manual_attempts: int
    manual_retry: bool
    event_id: str
    body: str | None
    subscription: Subscription | None


async def load_deliveries(db: Database, ids: Sequence[int]) -> list[DeliveryRow | None]:
    """Each delivery with its event body and subscription (None where gone): two queries for
    the whole batch, plain rows rather than ORM objects except for the few subscriptions (the
    deliver jobs of a busy worker read thousands of deliveries a second)."""
    deliveries, events = table_of(Delivery), table_of(Event)
    query = (
        sa.select(
            deliveries.c.id,
            deliveries.c.status,
            deliveries.c.attempts,
            deliveries.c.manual_attempts,
            deliveries.c.manual_retry,
            deliveries.c.subscription_id,
            deliveries.c.event_id,
            events.c.body,
        )
        .select_from(deliveries.outerjoin(events, events.c.id == deliveries.c.event_id))
        .where(deliveries.c.id.in_(set(ids)))
    )
    async with db.read() as session:
        rows = (await (await session.connection()).execute(query)).all()
        wanted = {row.subscription_id for row in rows}
        subscriptions = {
            s.id: s
            for s in (
                await session.exec(select(Subscription).where(col(Subscription.id).in_(wanted)))
            ).all()
        }
    found = {
        int(row.id): DeliveryRow(
            status=row.status,
            attempts=row.attempts,
            manual_attempts=row.manual_attempts,
            manual_retry=bool(row.manual_retry),
            event_id=row.event_id,
            body=row.body,
            subscription=subscriptions.get(row.subscription_id),
        )
        for row in rows
    }
    return [found.get(i) for i in ids]


async def record_batch(
    db: Database, schedule: RetrySchedule, disable_after: float, records: Sequence[AttemptRecord]
) -> list[Recorded]:
    """The attempts of concurrent jobs, in one write transaction."""
    async with db.write() as session:
        return await record_attempts(
            session, records, schedule=schedule, disable_after=disable_after
        )
