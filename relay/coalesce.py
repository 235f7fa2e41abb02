"""Group commit for concurrent callers: many ``await submit(item)``, one bulk call.

A worker runs hundreds of deliver jobs at once. Each used to record its attempt in a
transaction of its own: on PostgreSQL a pre-ping, BEGIN, the statements and COMMIT; on SQLite
a turn at the single write lock, per webhook. A ``Coalescer`` lets every job keep its own
simple ``await record(attempt)`` while the jobs that finish at about the same time share one
call: the first caller starts a flush, and whatever is submitted while that flush runs goes
into the next one. Under light load a batch is a single item and adds no delay; under heavy
load batches grow to what the database (or Redis) can absorb.

Correctness must not depend on batching: the attempt pipeline's writes are each their own
compare-and-set, so a batch that fails and is retried item by item records nothing twice.
Used by ``relay.delivery.pipeline`` (recording attempts) and ``relay.delivery.consumer``
(finishing jobs in Redis).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger("relay.worker")

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    """Runs ``bulk(items)`` (one result per item, in order) for items submitted concurrently.

    At most one bulk call runs at a time; items submitted meanwhile wait for the next one, up
    to ``max_batch`` per call. If a bulk call raises, its items are retried one by one, so one
    bad item cannot fail the jobs that merely shared its batch.

    ``gather``: an idle coalescer waits one more turn of the event loop before its call, for
    the items of jobs woken together with the first: bigger batches for a call whose cost is
    per batch (a write transaction). Off where every caller waits holding something: the
    gate's pass is awaited with a subscription's slot held, and that turn measured 1.1-1.4 ms
    of the ~8 ms a pass took, +9 % deliveries/s (bench/throughput.py, SQLite, two pairs).
    """

    def __init__(
        self,
        bulk: Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
        max_batch: int = 200,
        *,
        gather: bool = True,
    ) -> None:
        self._bulk = bulk
        self._max_batch = max_batch
        self._gather = gather
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        # a job cancelled while waiting (its timeout) cancels only its own future: its item
        # stays in the batch, which is harmless (the write is a compare-and-set)
        return await self.put(item)

    def put(self, item: In) -> asyncio.Future[Out]:
        """Add ``item`` to the next bulk call without waiting for it: for a caller that
        need not know when it is done (items are handled in the order they were put)."""
        runner = self._runner
        if runner is None or runner.done():
            loop = asyncio.get_running_loop()
            runner = self._runner = loop.create_task(self._drain())
        # the loop from the running flush, not asyncio.get_running_loop(): on Python 3.11
        # that is a getpid() system call each time, ~4 % of a busy worker's CPU here alone
        # (py-spy --native on bench/throughput.py); once per flush is enough
        future: asyncio.Future[Out] = runner.get_loop().create_future()
        self._pending.append((item, future))
        return future

    async def _drain(self) -> None:
        if self._gather:
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
                # database writes, queue endings and gate calls all batch here: say which
                logger.warning(
                    "batched call failed; retrying its items one by one",
                    extra={"call": getattr(self._bulk, "__qualname__", repr(self._bulk))},
                )
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
