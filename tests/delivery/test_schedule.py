"""Retry schedule: parsing, attempts, jitter and the Retry-After rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.delivery.schedule import RetrySchedule, retry_after_delay

DEFAULT = "5,300,1800,7200,18000,36000,36000"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_default_schedule_gives_eight_attempts() -> None:
    schedule = RetrySchedule.parse(DEFAULT)
    assert schedule.delays == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert schedule.attempts_max == 8
    assert schedule.longest == 36000
    assert RetrySchedule.parse(" 1.5 , 2 ").delays == (1.5, 2.0)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("5,,300", r"item 2 \(''\) is not a number"),
        ("5,abc", r"item 2 \('abc'\) is not a number"),
        ("5m", r"item 1 \('5m'\) is not a number"),
        ("5,-1", r"item 2 \('-1'\) must be a finite number of seconds >= 0"),
        ("inf", r"item 1 \('inf'\) must be a finite"),
        ("nan,3", r"item 1 \('nan'\) must be a finite"),
    ],
)
def test_parse_names_the_bad_item(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetrySchedule.parse(value)


def test_next_delay_jitter_and_end() -> None:
    schedule = RetrySchedule.parse("10,100")
    rng = random.Random(1)
    for _ in range(500):
        first = schedule.next_delay(1, rng)
        second = schedule.next_delay(2, rng)
        assert first is not None
        assert second is not None
        assert 8 <= first <= 12
        assert 80 <= second <= 120
    assert schedule.next_delay(3, rng) is None
    assert schedule.next_delay(99) is None
    with pytest.raises(ValueError, match="start at 1"):
        schedule.next_delay(0)


def test_jitter_spreads_retries() -> None:
    schedule = RetrySchedule.parse("100")
    rng = random.Random(7)
    delays = [schedule.next_delay(1, rng) for _ in range(200)]
    assert len({round(d or 0) for d in delays}) > 20


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("Wed, 01 May 2024 12:01:30 GMT", 90.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
        ("Wednesday, 01-May-24 12:01:30 GMT", 90.0),  # obsolete RFC 850 form, still valid
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_delay(header: str | None, expected: float | None) -> None:
    assert retry_after_delay(header, NOW) == expected
    assert retry_after_delay(header, NOW.timestamp()) == expected


def test_retry_after_never_shortens_and_is_capped_at_longest_step() -> None:
    schedule = RetrySchedule.parse("60,600")
    fixed = random.Random(3)

    def delay(attempt: int, header: str | None) -> float | None:
        return schedule.delay_after(attempt, retry_after=header, now=NOW, rng=random.Random(3))

    plain = schedule.next_delay(1, fixed)
    assert plain is not None
    assert delay(1, None) == plain
    assert delay(1, "0") == plain  # never shortens
    assert delay(1, "garbage") == plain
    assert delay(1, "300") == 300.0  # lengthens
    assert delay(1, "31536000") == 600.0  # capped at the longest step
    assert delay(1, format_datetime(NOW + timedelta(seconds=400), usegmt=True)) == 400.0
    assert delay(3, "5") is None  # Retry-After never adds an attempt


@given(
    st.lists(st.floats(0, 1e6), min_size=1, max_size=10),
    st.integers(1, 12),
    st.one_of(st.none(), st.integers(0, 10**8).map(str), st.text(max_size=10)),
    st.integers(0, 2**32),
)
def test_delay_after_properties(
    delays: list[float], attempt: int, header: str | None, seed: int
) -> None:
    schedule = RetrySchedule(tuple(delays))
    result = schedule.delay_after(attempt, retry_after=header, now=NOW, rng=random.Random(seed))
    base = schedule.next_delay(attempt, random.Random(seed))
    if attempt >= schedule.attempts_max:
        assert result is None
        return
    assert result is not None
    assert base is not None
    assert result >= base
    assert result <= max(base, schedule.longest)
