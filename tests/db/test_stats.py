"""The percentile estimate of the hourly histograms."""

from __future__ import annotations

from relay.db.models import DURATION_BOUNDS_MS, DURATION_COLUMNS
from relay.db.stats import Stats


def _stats(counts: dict[int, int]) -> Stats:
    histogram = [0] * len(DURATION_COLUMNS)
    for bound, n in counts.items():
        histogram[DURATION_BOUNDS_MS.index(bound) if bound in DURATION_BOUNDS_MS else -1] = n
    return Stats(attempts=sum(counts.values()), histogram=histogram)


def test_percentiles_interpolate_within_the_bucket() -> None:
    # 100 attempts: 50 in (0, 5], 40 in (25, 50], 10 in (100, 250]
    stats = _stats({5: 50, 50: 40, 250: 10})
    assert stats.percentile_ms(0.5) == 5.0
    assert stats.percentile_ms(0.7) == 37.5  # 20 of the 40 in (25, 50]
    assert stats.percentile_ms(0.95) == 175.0
    assert _stats({}).percentile_ms(0.5) is None


def test_the_open_bucket_reports_its_lower_bound() -> None:
    assert _stats({-1: 3}).percentile_ms(0.5) == float(DURATION_BOUNDS_MS[-1])
