"""The Coalescer on its own: concurrent submits share bulk calls, in order, bounded in size,
and one bad item fails only its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from relay.coalesce import Coalescer


class Bulk:
    """A bulk call that doubles its items, records each batch, and can be made to fail on
    one item (as a batch with one bad row fails its whole transaction)."""

    def __init__(self, bad: int | None = None, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.bad = bad
        self.delay = delay

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        if self.bad in items:
            raise ValueError(f"bad item {self.bad}")
        return [2 * i for i in items]


async def test_concurrent_submits_share_one_call_and_get_their_own_results() -> None:
    bulk = Bulk()
    coalescer = Coalescer(bulk, max_batch=100)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(10)))
    assert results == [2 * i for i in range(10)]
    assert bulk.batches == [list(range(10))]


async def test_items_submitted_during_a_call_go_into_the_next_one() -> None:
    bulk = Bulk(delay=0.05)
    coalescer = Coalescer(bulk, max_batch=100)
    first = asyncio.gather(*(coalescer.submit(i) for i in range(3)))
    await asyncio.sleep(0.01)  # the first call is running
    second = asyncio.gather(*(coalescer.submit(i) for i in range(3, 6)))
    assert await first == [0, 2, 4]
    assert await second == [6, 8, 10]
    assert bulk.batches == [[0, 1, 2], [3, 4, 5]]


async def test_a_call_takes_at_most_max_batch_items() -> None:
    bulk = Bulk()
    coalescer = Coalescer(bulk, max_batch=4)
    assert await asyncio.gather(*(coalescer.submit(i) for i in range(10))) == [
        2 * i for i in range(10)
    ]
    assert [len(b) for b in bulk.batches] == [4, 4, 2]


async def test_a_failing_batch_is_retried_item_by_item() -> None:
    bulk = Bulk(bad=3)
    coalescer = Coalescer(bulk, max_batch=100)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(5)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 2, 4, 8]
    assert isinstance(results[3], ValueError)
    assert bulk.batches == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]


async def test_a_cancelled_caller_leaves_the_others_their_results() -> None:
    bulk = Bulk(delay=0.05)
    coalescer = Coalescer(bulk, max_batch=100)
    tasks = [asyncio.create_task(coalescer.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    tasks[1].cancel()
    assert await tasks[0] == 0
    assert await tasks[2] == 4
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]


@pytest.mark.parametrize(("gather", "batches"), [(True, [[0, 1]]), (False, [[0], [1]])])
async def test_gather_waits_one_turn_for_a_job_woken_with_the_first(
    gather: bool, batches: list[list[int]]
) -> None:
    bulk = Bulk()
    coalescer = Coalescer(bulk, max_batch=100, gather=gather)

    async def a_turn_later() -> int:
        await asyncio.sleep(0)
        return await coalescer.submit(1)

    assert await asyncio.gather(coalescer.submit(0), a_turn_later()) == [0, 2]
    assert bulk.batches == batches
