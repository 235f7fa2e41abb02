"""Per-subscription slots: bounded, and gone once nothing holds or waits for them."""

from __future__ import annotations

import asyncio

from relay.delivery.slots import Slots


async def test_at_most_limit_in_flight_and_nothing_left_after() -> None:
    slots = Slots(wait=5)
    running = peak = 0

    async def attempt(key: str) -> None:
        nonlocal running, peak
        assert await slots.acquire(key, 2)
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        slots.release(key)

    await asyncio.gather(*(attempt("sub_a") for _ in range(10)))
    assert peak == 2
    # a churn of subscriptions, each used once, leaves no entry behind
    await asyncio.gather(*(attempt(f"sub_{n}") for n in range(1000)))
    assert len(slots) == 0


async def test_a_wait_that_times_out_leaves_nothing_behind() -> None:
    slots = Slots(wait=0.05)
    assert await slots.acquire("sub_a", 1)
    assert not await slots.acquire("sub_a", 1)  # busy: steps aside
    slots.release("sub_a")
    assert len(slots) == 0
    waiter = asyncio.create_task(slots.acquire("sub_b", 1))
    await asyncio.sleep(0)
    assert await waiter
    slots.release("sub_b")
    assert len(slots) == 0


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    slots = Slots(wait=10)
    assert await slots.acquire("sub_a", 1)
    waiter = asyncio.create_task(slots.acquire("sub_a", 1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    slots.release("sub_a")
    assert len(slots) == 0


async def test_slots_are_handed_over_in_turn() -> None:
    slots = Slots(wait=5)
    assert await slots.acquire("sub_a", 1)
    order: list[int] = []

    async def attempt(n: int) -> None:
        assert await slots.acquire("sub_a", 1)
        order.append(n)
        await asyncio.sleep(0)
        slots.release("sub_a")

    waiting = [asyncio.create_task(attempt(n)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert slots.full("sub_a")
    slots.release("sub_a")
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2, 3, 4]
    assert len(slots) == 0


async def test_a_wait_cancelled_once_handed_a_slot_hands_it_on() -> None:
    slots = Slots(wait=5)
    assert await slots.acquire("sub_a", 1)
    first = asyncio.create_task(slots.acquire("sub_a", 1))
    second = asyncio.create_task(slots.acquire("sub_a", 1))
    await asyncio.sleep(0.01)
    slots.release("sub_a")  # handed to the first, which has not run since
    first.cancel()
    assert await second
    assert first.cancelled()
    assert slots.full("sub_a")
    slots.release("sub_a")
    assert len(slots) == 0
