"""When to try a failed delivery again (``RELAY_RETRY_SCHEDULE``).

The schedule lists the seconds before attempts 2..N+1, so N values give N+1 attempts. Each
delay gets ±20 % jitter so that a receiver that failed for everyone at once is not hit by every
retry in the same second when it comes back.

A receiver may ask for more time with ``Retry-After`` (429/503). It is honoured but bounded on
both sides: it never makes the relay retry *sooner* than the schedule (a receiver answering
``Retry-After: 0`` in a loop must not turn retries into a hot loop), and it is capped at the
schedule's longest step (a receiver answering ``Retry-After: 31536000`` must not park a
delivery for a year, past the point anyone would look for it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2
#: Statuses whose ``Retry-After`` the relay honours.
RETRY_AFTER_STATUSES: frozenset[int] = frozenset({429, 503})


def retry_after_delay(header_value: str | None, now: datetime | float) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (delay-seconds or HTTP-date), or None.

    ``now`` is an aware datetime or unix seconds; a date in the past gives 0. Anything
    unparseable gives None, so a broken header falls back to the plain schedule.
    """
    if header_value is None:
        return None
    value = header_value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC per RFC 5322; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    now_ts = now.timestamp() if isinstance(now, datetime) else float(now)
    return max(0.0, when.timestamp() - now_ts)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Delays (seconds) before attempts 2..N+1."""

    delays: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("a retry schedule needs at least one delay")
        for position, delay in enumerate(self.delays, start=1):
            if not math.isfinite(delay) or delay < 0:
                raise ValueError(
                    f"retry schedule item {position} ({delay!r}) must be a finite "
                    "number of seconds >= 0"
                )

    @classmethod
    def parse(cls, value: str) -> RetrySchedule:
        """Parse ``"5,300,1800"``; ValueError naming the bad item (1-based) and its text."""
        if not value.strip():
            raise ValueError("retry schedule is empty: list seconds, e.g. '5,300,1800'")
        delays: list[float] = []
        for position, raw in enumerate(value.split(","), start=1):
            item = raw.strip()
            try:
                delay = float(item)
            except ValueError:
                raise ValueError(
                    f"retry schedule item {position} ({item!r}) is not a number of seconds"
                ) from None
            if not math.isfinite(delay) or delay < 0:
                raise ValueError(
                    f"retry schedule item {position} ({item!r}) must be a finite "
                    "number of seconds >= 0"
                )
            delays.append(delay)
        return cls(tuple(delays))

    @property
    def attempts_max(self) -> int:
        """Total attempts, the first included."""
        return len(self.delays) + 1

    @property
    def longest(self) -> float:
        return max(self.delays)

    def next_delay(self, attempt_number: int, rng: random.Random | None = None) -> float | None:
        """Jittered seconds to wait after attempt ``attempt_number`` (1-based) failed;
        None when that was the last attempt."""
        if attempt_number < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt_number}")
        if attempt_number >= self.attempts_max:
            return None
        base = self.delays[attempt_number - 1]
        return base * (rng or random).uniform(1 - JITTER, 1 + JITTER)

    def delay_after(
        self,
        attempt_number: int,
        *,
        retry_after: str | None = None,
        now: datetime | float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """:meth:`next_delay`, lengthened (never shortened) by a ``Retry-After`` value, which
        is capped at the longest step. Pass ``retry_after`` only for 429/503 responses."""
        delay = self.next_delay(attempt_number, rng)
        if delay is None or retry_after is None:
            return delay
        asked = retry_after_delay(retry_after, datetime.now(UTC) if now is None else now)
        if asked is None:
            return delay
        return max(delay, min(asked, self.longest))
