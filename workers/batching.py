"""Coalescing the database work of concurrent deliver jobs.

A worker runs up to ~100 deliver jobs at once, and each used to read its delivery in a
transaction of its own and record its attempt in another: two transactions (on PostgreSQL a
pre-ping, BEGIN, the statements and COMMIT each; on SQLite a turn at the single write lock)
per webhook. A ``Coalescer`` lets every job keep its own simple ``await load(id)`` /
``await record(attempt)`` while the jobs that ask at about the same time share one query or
one transaction: the first caller starts a flush, and whatever is submitted while that flush
runs goes into the next one. Under light load a batch is a single item and adds no delay;
under heavy load batches grow to what the database can absorb.

Correctness does not depend on batching: each recorded attempt is still its own
compare-and-set (``relay.delivery.outcomes``), and a job returns only after the transaction
holding its attempt committed, so a kill -9 loses at most attempts that arq runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlmodel import col, select

from relay.db import Database
from relay.db.models import Delivery, Event, Subscription
from relay.delivery.outcomes import AttemptRecord, Recorded, record_attempts
from relay.delivery.schedule import RetrySchedule

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
        # shield: a job cancelled while waiting (its timeout) leaves its item in the batch,
        # which is harmless (the write is a compare-and-set) and keeps the batch consistent
        return await asyncio.shield(future)

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


DeliveryRow = tuple[Delivery, Subscription | None, Event | None]


async def load_deliveries(db: Database, ids: Sequence[int]) -> list[DeliveryRow | None]:
    """Each delivery with its subscription and event (None where gone), in one query."""
    async with db.read() as session:
        rows = (
            await session.exec(
                select(Delivery, Subscription, Event)
                .join(
                    Subscription,
                    col(Subscription.id) == col(Delivery.subscription_id),
                    isouter=True,
                )
                .join(Event, col(Event.id) == col(Delivery.event_id), isouter=True)
                .where(col(Delivery.id).in_(set(ids)))
            )
        ).all()
    found: dict[int | None, DeliveryRow] = {d.id: (d, sub, event) for d, sub, event in rows}
    return [found.get(i) for i in ids]


async def record_batch(
    db: Database, schedule: RetrySchedule, disable_after: float, records: Sequence[AttemptRecord]
) -> list[Recorded]:
    """The attempts of concurrent jobs, in one write transaction."""
    async with db.write() as session:
        return await record_attempts(
            session, records, schedule=schedule, disable_after=disable_after
        )
