"""Per-subscription in-flight slots of one worker process: at most ``limit`` attempts to one
subscription at a time, the rest waiting a little (then stepping aside, ``SubscriptionBusy``).

A subscription's entry lives only while something holds or waits for one of its slots, so a
worker that has seen thousands of subscriptions come and go (created, deleted, rotated) keeps
none of them: per-subscription state must not outlive its use.
"""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # holding or waiting, per key

    def __len__(self) -> int:
        return len(self._semaphores)

    async def acquire(self, key: str) -> bool:
        """One of ``key``'s slots, waiting at most ``wait`` seconds; False if none freed."""
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = asyncio.Semaphore(self.limit)
        self._users[key] = self._users.get(key, 0) + 1
        if not semaphore.locked():
            await semaphore.acquire()  # free: returns at once
            return True
        try:
            async with asyncio.timeout(self.wait):  # not wait_for: no extra task
                await semaphore.acquire()
        except BaseException as exc:
            self._leave(key)
            if isinstance(exc, TimeoutError):
                return False
            raise
        return True

    def release(self, key: str) -> None:
        self._semaphores[key].release()
        self._leave(key)

    def _leave(self, key: str) -> None:
        left = self._users[key] - 1
        if left:
            self._users[key] = left
        else:
            del self._users[key], self._semaphores[key]
