"""Rate-limit headers and the TokenPacer, on a fake clock (no real sleeping)."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from relay.clever.ratelimit import (
    RateLimit,
    TokenPacer,
    parse_reset,
    parse_retry_after,
    token_key,
)

T0 = 1_682_376_526.0  # a real recorded window start


class FakeClock:
    """``now()`` for the pacer; ``sleep`` advances time instead of waiting."""

    def __init__(self, now: float = T0) -> None:
        self.t = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def pacer(clock: FakeClock, **kwargs: float) -> TokenPacer:
    return TokenPacer(clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


RECORDED_HEADERS = {
    "content-type": "application/json; charset=utf-8",
    "clever-request-id": "cbeed16777822dd18b5babaaa33a8124",
    "x-ratelimit-limit": "1200",
    "x-ratelimit-remaining": "1195",
    "x-ratelimit-reset": "1682376586",
    "x-ratelimit-bucket": "bearer",
}


def test_rate_limit_from_recorded_headers() -> None:
    assert RateLimit.from_headers(RECORDED_HEADERS) == RateLimit(
        limit=1200, remaining=1195, reset_at=1682376586.0, bucket="bearer"
    )


def test_rate_limit_header_names_are_case_insensitive() -> None:
    upper = {k.upper(): v for k, v in RECORDED_HEADERS.items()}
    assert RateLimit.from_headers(upper) == RateLimit.from_headers(RECORDED_HEADERS)
    assert RateLimit.from_headers(httpx.Headers(upper)) == RateLimit.from_headers(upper)


def test_bucket_is_optional() -> None:
    headers = {k: v for k, v in RECORDED_HEADERS.items() if k != "x-ratelimit-bucket"}
    limit = RateLimit.from_headers(headers)
    assert limit is not None
    assert limit.bucket is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-ratelimit-limit", None),
        ("x-ratelimit-remaining", None),
        ("x-ratelimit-reset", None),
        ("x-ratelimit-limit", "lots"),
        ("x-ratelimit-remaining", "-1"),
        ("x-ratelimit-remaining", "1.5"),
        ("x-ratelimit-reset", "soon"),
        ("x-ratelimit-reset", "nan"),
        ("x-ratelimit-reset", "inf"),
        ("x-ratelimit-reset", "0"),
        ("x-ratelimit-reset", ""),
    ],
)
def test_missing_or_garbage_headers_give_none(name: str, value: str | None) -> None:
    headers = dict(RECORDED_HEADERS)
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    assert RateLimit.from_headers(headers) is None


def test_no_headers_at_all() -> None:
    assert RateLimit.from_headers({}) is None
    assert parse_reset({}) is None


def test_parse_reset_alone() -> None:
    assert parse_reset({"X-RateLimit-Reset": "1682376586"}) == 1682376586.0
    assert parse_reset({"X-RateLimit-Reset": "garbage"}) is None


def test_parse_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "5"}, T0) == T0 + 5
    assert parse_retry_after({"retry-after": " 2.5 "}, T0) == T0 + 2.5
    date = email.utils.formatdate(T0 + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, T0) == T0 + 30
    assert parse_retry_after({}, T0) is None
    assert parse_retry_after({"Retry-After": "-3"}, T0) is None
    assert parse_retry_after({"Retry-After": "whenever"}, T0) is None
    assert parse_retry_after({"Retry-After": "nan"}, T0) is None


def test_token_key_hides_the_token() -> None:
    key = token_key("tok_secret_value")
    assert "secret" not in key
    assert key == token_key("tok_secret_value")
    assert key != token_key("tok_other_value")


async def test_unknown_key_goes_at_once() -> None:
    clock = FakeClock()
    p = pacer(clock)
    assert p.delay_for("k") == 0.0
    assert await p.wait("k") == 0.0
    assert clock.sleeps == []


async def test_block_holds_until_reset_plus_margin() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=0.5)
    p.block("k", T0 + 2)
    assert p.delay_for("k") == pytest.approx(2.5)
    assert p.delay_for("other") == 0.0
    assert await p.wait("k") == pytest.approx(2.5)
    assert clock.t >= T0 + 2.5
    # the window is over: the next request goes at once
    assert p.delay_for("k") == 0.0
    assert await p.wait("k") == 0.0


async def test_block_never_shortens() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=0.0)
    p.block("k", T0 + 10)
    p.block("k", T0 + 3)
    assert p.delay_for("k") == pytest.approx(10)


async def test_block_in_past_does_not_wait() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=0.0)
    p.block("k", T0 - 5)
    assert p.delay_for("k") == 0.0


async def test_block_arriving_during_a_wait_extends_it() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=0.0, low_water=100)
    p.record("k", RateLimit(limit=1200, remaining=10, reset_at=T0 + 10))
    assert await p.wait("k") == 0.0  # first of the spread goes now
    calls = 0

    async def sleep_and_get_429(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            p.block("k", T0 + 30)  # another caller's request got a 429 meanwhile
        await clock.sleep(seconds)

    p._sleep = sleep_and_get_429
    await p.wait("k")
    assert clock.t >= T0 + 30


async def test_plenty_remaining_is_not_paced() -> None:
    clock = FakeClock()
    p = pacer(clock, low_water=100)
    p.record("k", RateLimit(limit=1200, remaining=1195, reset_at=T0 + 60))
    for _ in range(50):
        assert await p.wait("k") == 0.0
    assert clock.t == T0


async def test_low_remaining_is_spread_until_reset() -> None:
    clock = FakeClock()
    p = pacer(clock, low_water=100, margin=0.0)
    p.record("k", RateLimit(limit=1200, remaining=10, reset_at=T0 + 10))
    sent = []
    for _ in range(10):
        await p.wait("k")
        sent.append(clock.t - T0)
    assert sent == pytest.approx([float(i) for i in range(10)])
    # the eleventh has nothing left in this window: it waits for the reset
    await p.wait("k")
    assert clock.t == pytest.approx(T0 + 10)


async def test_delay_for_does_not_reserve() -> None:
    clock = FakeClock()
    p = pacer(clock, low_water=100, margin=0.0)
    p.record("k", RateLimit(limit=1200, remaining=4, reset_at=T0 + 8))
    await p.wait("k")
    assert p.delay_for("k") == pytest.approx(2.0)
    assert p.delay_for("k") == pytest.approx(2.0)


async def test_spreading_follows_newer_headers() -> None:
    clock = FakeClock()
    p = pacer(clock, low_water=100, margin=0.0)
    p.record("k", RateLimit(limit=1200, remaining=2, reset_at=T0 + 10))
    await p.wait("k")
    # a new window began (Clever says so): pacing restarts from its numbers
    p.record("k", RateLimit(limit=1200, remaining=1199, reset_at=T0 + 70))
    assert p.delay_for("k") == 0.0


async def test_same_window_keeps_the_lower_remaining() -> None:
    clock = FakeClock()
    p = pacer(clock, low_water=100, margin=0.0)
    p.record("k", RateLimit(limit=1200, remaining=1, reset_at=T0 + 10))
    await p.wait("k")  # our estimate is now 0
    # a late response from before our request: says 1, but we have already used it
    p.record("k", RateLimit(limit=1200, remaining=1, reset_at=T0 + 10))
    assert p.delay_for("k") == pytest.approx(10)


async def test_exhausted_window_waits_for_reset_plus_margin() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=1.0)
    p.record("k", RateLimit(limit=1200, remaining=0, reset_at=T0 + 20))
    assert p.delay_for("k") == pytest.approx(21)
    await p.wait("k")
    assert clock.t == pytest.approx(T0 + 21)


async def test_none_rate_limit_changes_nothing() -> None:
    clock = FakeClock()
    p = pacer(clock)
    p.record("k", None)
    assert p.delay_for("k") == 0.0


async def test_keys_are_independent() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=0.0)
    p.record("a", RateLimit(limit=1200, remaining=0, reset_at=T0 + 20))
    assert p.delay_for("a") == pytest.approx(20)
    assert p.delay_for("b") == 0.0


async def test_old_windows_are_pruned() -> None:
    clock = FakeClock()
    p = pacer(clock, margin=0.0)
    for i in range(5000):
        p.record(f"k{i}", RateLimit(limit=1200, remaining=5, reset_at=T0 + 1))
    clock.t += 10
    for i in range(4000):
        p.record(f"fresh{i}", RateLimit(limit=1200, remaining=5, reset_at=clock.t + 60))
    assert "k0" not in p._windows
    assert "fresh0" in p._windows
    assert len(p._windows) < 5000
