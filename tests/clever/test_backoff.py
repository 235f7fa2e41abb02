"""Backoff bounds and the minimal retry helper."""

from __future__ import annotations

import pytest

from relay._exceptions import (
    CleverRateLimited,
    CleverServerError,
    CleverTransportError,
    CleverUnauthorized,
)
from relay.clever.backoff import Backoff, with_retries


def test_ceiling_doubles_then_caps() -> None:
    b = Backoff(base=1, cap=60)
    assert [b.ceiling(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert b.ceiling(10_000) == 60  # no overflow


def test_full_jitter_spans_zero_to_ceiling() -> None:
    assert Backoff(base=1, cap=60, rng=lambda: 0.0).next_delay(3) == 0.0
    assert Backoff(base=1, cap=60, rng=lambda: 0.5).next_delay(3) == 4.0
    assert Backoff(base=1, cap=60, rng=lambda: 0.999).next_delay(20) == pytest.approx(59.94)


def test_real_random_stays_in_bounds() -> None:
    b = Backoff(base=0.5, cap=10)
    for attempt in range(12):
        for _ in range(50):
            assert 0.0 <= b.next_delay(attempt) <= b.ceiling(attempt)


@pytest.mark.parametrize(("base", "cap"), [(0, 60), (-1, 60), (10, 5)])
def test_bad_parameters(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(base=base, cap=cap)


def test_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Backoff().next_delay(-1)


class Flaky:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_with_retries_retries_transient_errors() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    fn = Flaky(
        [CleverTransportError("down"), CleverServerError("boom", status_code=502)],
    )
    backoff = Backoff(base=1, cap=60, rng=lambda: 1.0)
    assert await with_retries(fn, backoff=backoff, max_attempts=3, sleep=sleep) == "ok"
    assert fn.calls == 3
    assert slept == [1.0, 2.0]


async def test_with_retries_gives_up_with_the_last_error() -> None:
    async def sleep(seconds: float) -> None:
        pass

    fn = Flaky([CleverTransportError("one"), CleverTransportError("two")])
    with pytest.raises(CleverTransportError, match="two"):
        await with_retries(fn, backoff=Backoff(), max_attempts=2, sleep=sleep)
    assert fn.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        CleverUnauthorized("no", status_code=401),
        CleverRateLimited("slow down", reset_at=0.0),
        ValueError("bug"),
    ],
)
async def test_with_retries_does_not_retry_the_rest(error: Exception) -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("must not sleep")

    fn = Flaky([error])
    with pytest.raises(type(error)):
        await with_retries(fn, backoff=Backoff(), max_attempts=5, sleep=sleep)
    assert fn.calls == 1


async def test_with_retries_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        await with_retries(Flaky([]), backoff=Backoff(), max_attempts=0)
