"""Capped exponential backoff with full jitter, for Clever 5xx answers and network errors.

Full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``) rather than a fixed ladder:
when Clever has an outage, every district's poll job fails at once, and jitter keeps them from
retrying in lockstep. The client never retries by itself; the poll job decides, optionally via
``with_retries``. 429s are not retried here: the pacer already holds requests until the reset.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from relay._exceptions import CleverServerError, CleverTransportError

__all__ = ["RETRYABLE", "Backoff", "with_retries"]

T = TypeVar("T")

RETRYABLE: tuple[type[BaseException], ...] = (CleverTransportError, CleverServerError)

logger = logging.getLogger("relay.clever")

# 2**60 seconds is already far beyond any cap; stop there so the float can't overflow.
_MAX_EXPONENT = 60


@dataclass(frozen=True)
class Backoff:
    """``next_delay(attempt)`` for attempt 0, 1, 2...: uniform in ``[0, min(cap, base*2**n)]``."""

    base: float = 1.0
    cap: float = 60.0
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("Backoff needs 0 < base <= cap")

    def ceiling(self, attempt: int) -> float:
        """The largest delay ``next_delay(attempt)`` may return."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        return min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))

    def next_delay(self, attempt: int) -> float:
        """A jittered delay after the ``attempt``-th failure (0-based: the first failure is 0)."""
        return self.rng() * self.ceiling(attempt)


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    max_attempts: int,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE,
) -> T:
    """Call ``fn`` up to ``max_attempts`` times, sleeping ``backoff`` between retryable errors.

    Anything not in ``retry_on`` (401, 4xx, bad bodies, 429) propagates at once; the last
    retryable error propagates when the attempts run out.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    attempt = 0
    while True:
        try:
            return await fn()
        except retry_on as exc:
            if attempt + 1 >= max_attempts:
                raise
            delay = backoff.next_delay(attempt)
            logger.warning(
                "Clever call failed, retrying in %.2fs: %s",
                delay,
                exc,
                extra={"attempt": attempt + 1, "retry_delay": delay},
            )
            await sleep(delay)
            attempt += 1
