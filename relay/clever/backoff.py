"""Capped exponential backoff with full jitter, for Clever 5xx answers and network errors.

Full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``) rather than a fixed ladder:
when Clever has an outage, every district's poll job fails at once, and jitter keeps them from
retrying in lockstep. The client never retries by itself; the poller decides (its
``PollingTuning.backoff``). 429s are not retried here: the pacer holds requests until the reset.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]

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
