"""Clever's per-token rate limit: read the headers, and pace requests so we rarely hit a 429.

Clever allows 1,200 requests per minute per token in a fixed window that starts at the window's
first request (``X-RateLimit-Reset`` = that time + 60 s, unix seconds). A 429 has an empty body
and, as far as anyone knows, no ``Retry-After``: the reset header is the only guide. The pacer
is in-process and keyed by a hash of the token, so it never holds a token itself.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "RateLimit",
    "TokenPacer",
    "parse_reset",
    "parse_retry_after",
    "token_key",
]

Clock = Callable[[], float]
_PRUNE_ABOVE = 4096  # windows kept before sweeping those that are over
Sleep = Callable[[float], Awaitable[object]]


def token_key(token: str) -> str:
    """A stable pacer key for a token that reveals nothing about it (safe to log)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RateLimit:
    """The ``X-RateLimit-*`` headers of one response; ``reset_at`` is unix seconds."""

    limit: int
    remaining: int
    reset_at: float
    bucket: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """None unless limit, remaining and reset are all present and sane.

        Garbage must not crash a poll: without trustworthy headers we simply don't pace.
        """
        lower = _lower(headers)
        limit = _non_negative_int(lower.get("x-ratelimit-limit"))
        remaining = _non_negative_int(lower.get("x-ratelimit-remaining"))
        reset_at = _reset_value(lower.get("x-ratelimit-reset"))
        if limit is None or remaining is None or reset_at is None:
            return None
        bucket = lower.get("x-ratelimit-bucket") or None
        return cls(limit=limit, remaining=remaining, reset_at=reset_at, bucket=bucket)


def parse_reset(headers: Mapping[str, str]) -> float | None:
    """``X-RateLimit-Reset`` alone (a 429 may carry it even when the other headers are odd)."""
    return _reset_value(_lower(headers).get("x-ratelimit-reset"))


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """``Retry-After`` as an absolute unix time: delta seconds or an HTTP date; None if absent."""
    value = _lower(headers).get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return now + seconds


@dataclass
class _Window:
    """What we know of one token's current window."""

    blocked_until: float = 0.0  # hard stop: a 429's reset (plus margin)
    reset_at: float = 0.0  # the window's end as Clever told us
    remaining: int | None = None  # estimate: Clever's figure minus what we sent since
    next_slot: float = 0.0  # earliest next send while spreading


class TokenPacer:
    """Decides when the next request with a token may go out.

    - After a 429 nothing is sent before its reset (``block``), however many callers wait.
    - When ``remaining`` drops to ``low_water`` or below, the remaining requests are spread
      evenly over the time left until reset instead of being burnt at once; at zero, wait for
      the reset.
    - ``margin`` seconds are added to every reset: Clever's reset is whole seconds and its
      clock isn't ours, and one extra second per exhausted window costs nothing.

    ``wait`` sleeps; ``delay_for`` only tells, so an arq job can reschedule itself instead.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        low_water: int = 100,
        margin: float = 1.0,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._low_water = low_water
        self._margin = margin
        self._windows: dict[str, _Window] = {}
        self._prune_above = _PRUNE_ABOVE

    def delay_for(self, key: str) -> float:
        """Seconds until a request with this key may be sent (0.0: now). Reserves nothing."""
        now = self._clock()
        return max(0.0, self._plan(key, now, reserve=False) - now)

    async def wait(self, key: str) -> float:
        """Sleep until a request may be sent, take its slot, and return the seconds slept."""
        now = self._clock()
        send_at = self._plan(key, now, reserve=True)
        slept = 0.0
        while (delay := send_at - self._clock()) > 0:
            await self._sleep(delay)
            slept += delay
            # A 429 for this token may have been recorded while we slept.
            send_at = max(send_at, self._hard_stop(key))
        return slept

    def record(self, key: str, rate_limit: RateLimit | None) -> None:
        """Update the window from a response's headers (None: nothing learnt)."""
        if rate_limit is None:
            return
        window = self._windows.setdefault(key, _Window())
        if rate_limit.reset_at == window.reset_at and window.remaining is not None:
            # Same window: requests we reserved may not have reached Clever yet; keep the lower.
            window.remaining = min(window.remaining, rate_limit.remaining)
        else:
            window.reset_at = rate_limit.reset_at
            window.remaining = rate_limit.remaining
            window.next_slot = 0.0
        self._prune()

    def block(self, key: str, until: float) -> None:
        """A 429: send nothing with this key before ``until`` (unix seconds) plus the margin."""
        window = self._windows.setdefault(key, _Window())
        window.blocked_until = max(window.blocked_until, until + self._margin)
        window.remaining = 0
        window.reset_at = max(window.reset_at, until)

    def _hard_stop(self, key: str) -> float:
        window = self._windows.get(key)
        return window.blocked_until if window else 0.0

    def _plan(self, key: str, now: float, *, reserve: bool) -> float:
        window = self._windows.get(key)
        if window is None:
            return now
        send_at = max(now, window.blocked_until)
        remaining = window.remaining
        window_end = window.reset_at + self._margin
        if remaining is None or now >= window_end:
            # The window is over (or unknown): a fresh one starts with our next request.
            if reserve:
                window.remaining = None
            return send_at
        if remaining <= 0:
            send_at = max(send_at, window_end)
        elif remaining <= self._low_water:
            send_at = max(send_at, window.next_slot)
            if reserve:
                window.next_slot = send_at + max(0.0, window_end - send_at) / remaining
        if reserve and remaining > 0:
            window.remaining = remaining - 1
        return send_at

    def _prune(self) -> None:
        """Forget windows that are over, so a churn of tokens can't grow memory without bound.

        Amortised: the next sweep waits until the map has doubled past what survived this one.
        """
        if len(self._windows) <= self._prune_above:
            return
        now = self._clock()
        for key, window in list(self._windows.items()):
            if max(window.blocked_until, window.reset_at + self._margin) < now:
                del self._windows[key]
        self._prune_above = max(_PRUNE_ABOVE, 2 * len(self._windows))


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _non_negative_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _reset_value(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None
