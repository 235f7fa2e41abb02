"""In-flight slots of one worker process, per key (a subscription, an owner): at most
``limit`` holders of one key at a time, the rest waiting a little (then stepping aside,
``SubscriptionBusy``). The limit is the caller's: a subscription's ``max_in_flight``.

A subscription's entry lives only while something holds or waits for one of its slots, so a
worker that has seen thousands of subscriptions come and go (created, deleted, rotated) keeps
none of them: per-subscription state must not outlive its use.
"""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # holding or waiting, per key

    def __len__(self) -> int:
        return len(self._semaphores)

    async def acquire(self, key: str, limit: int) -> bool:
        """One of ``key``'s ``limit`` slots, waiting at most ``wait`` seconds; False if none
        freed. (A limit changed while the key is in use applies once nobody holds it.)"""
        semaphore = self._semaphores.get(key)
        if semaphore is None:
            semaphore = self._semaphores[key] = asyncio.Semaphore(limit)
        self._users[key] = self._users.get(key, 0) + 1
        if not semaphore.locked():
            await semaphore.acquire()  # free: returns at once
            return True
        if self.wait <= 0:
            self._leave(key)
            return False
        try:
            async with asyncio.timeout(self.wait):  # not wait_for: no extra task
                await semaphore.acquire()
        except BaseException as exc:
            self._leave(key)
            if isinstance(exc, TimeoutError):
                return False
            raise
        return True

    def full(self, key: str) -> bool:
        """All of ``key``'s slots are held right now."""
        semaphore = self._semaphores.get(key)
        return semaphore is not None and semaphore.locked()

    def release(self, key: str) -> None:
        self._semaphores[key].release()
        self._leave(key)

    def _leave(self, key: str) -> None:
        left = self._users[key] - 1
        if left:
            self._users[key] = left
        else:
            del self._users[key], self._semaphores[key]
