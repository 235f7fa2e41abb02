"""Backoff bounds."""

from __future__ import annotations

import pytest

from relay.clever.backoff import Backoff


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
