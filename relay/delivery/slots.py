"""In-flight slots of one worker process, per key (a subscription, an owner): at most
``limit`` holders of one key at a time, the rest waiting their turn a little (then stepping
aside, ``SubscriptionBusy``). The limit is the caller's: a subscription's ``max_in_flight``.

A key's entry lives only while something holds or waits for one of its slots, so a worker
that has seen thousands of subscriptions come and go (created, deleted, rotated) keeps none
of them: per-subscription state must not outlive its use.

Not ``asyncio.Semaphore`` under ``asyncio.timeout``: on a busy worker most jobs wait here for
their subscription, and a timer made and cancelled per wait, with ``Semaphore.locked()``
looking through every waiter, were ~5 % of its CPU (py-spy on ``bench/throughput.py``).
Waits end in rounds of ``ROUND`` seconds, one timer per round for every wait that ends in it,
so a wait lasts up to that much longer than asked.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

#: waits that end within the same ROUND seconds share one timer
ROUND = 0.05


class _Key:
    __slots__ = ("held", "limit", "users", "waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.users = 0  # holding or waiting
        # in turn; a waiter is told True (its slot, handed over) or False (its wait ended)
        self.waiters: deque[asyncio.Future[bool]] = deque()


class Slots:
    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._keys: dict[str, _Key] = {}
        self._rounds: dict[int, list[asyncio.Future[bool]]] = {}  # round → waits ending in it

    def __len__(self) -> int:
        return len(self._keys)

    async def acquire(self, key: str, limit: int) -> bool:
        """One of ``key``'s ``limit`` slots, waiting at most ``wait`` seconds (and up to
        ``ROUND`` more) in turn; False if none freed. (A limit changed while the key is in
        use applies once nobody holds it.)"""
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = _Key(limit)
        entry.users += 1
        if entry.held < entry.limit and not entry.waiters:
            entry.held += 1
            return True
        if self.wait <= 0:
            self._leave(key, entry)
            return False
        waiter = self._waiter()
        entry.waiters.append(waiter)
        try:
            granted = await waiter
        except BaseException:
            # cancelled while waiting, or once handed a slot it will not use now
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release(key)
            else:
                self._leave(key, entry)
            raise
        if not granted:
            self._leave(key, entry)
        return granted

    def full(self, key: str) -> bool:
        """All of ``key``'s slots are held right now."""
        entry = self._keys.get(key)
        return entry is not None and entry.held >= entry.limit

    def release(self, key: str) -> None:
        """Give the slot back: to the first in turn still waiting, if any."""
        entry = self._keys[key]
        while entry.waiters:
            waiter = entry.waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # handed over: it holds the slot now
                self._leave(key, entry)
                return
        entry.held -= 1
        self._leave(key, entry)

    def _leave(self, key: str, entry: _Key) -> None:
        entry.users -= 1
        if not entry.users:
            del self._keys[key]

    def _waiter(self) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        ends = math.ceil((loop.time() + self.wait) / ROUND)
        waits = self._rounds.get(ends)
        if waits is None:
            waits = self._rounds[ends] = []
            loop.call_at(ends * ROUND, self._end_round, ends)
        waits.append(waiter)
        return waiter

    def _end_round(self, ends: int) -> None:
        for waiter in self._rounds.pop(ends, ()):
            if not waiter.done():
                waiter.set_result(False)
