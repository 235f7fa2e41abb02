"""``detect_gap``: when the stored cursor may have silently expired at Clever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.clever.events import CleverEvent, EventsPage
from relay.db.models import District
from relay.polling.gap import RETENTION_SAFETY, detect_gap

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86_400.0
RETENTION = 30 * DAY


def event_id(at: datetime, n: int = 1) -> str:
    return f"{int(at.timestamp()):08x}{n:016x}"


def page(*times: datetime) -> EventsPage:
    events = [
        CleverEvent(
            id=event_id(t, i),
            type="users.updated",
            created=t,
            raw={"id": event_id(t, i), "type": "users.updated", "data": {"object": {"id": "u"}}},
        )
        for i, t in enumerate(times)
    ]
    return EventsPage(events=events)


def district(cursor_age: timedelta | None, caught_up_age: timedelta | None = None) -> District:
    return District(
        id="d",
        token="t",
        cursor=None if cursor_age is None else event_id(NOW - cursor_age),
        caught_up_at=None if caught_up_age is None else NOW - caught_up_age,
    )


def test_no_cursor_means_no_gap() -> None:
    assert detect_gap(district(None), page(NOW - timedelta(days=29)), NOW, RETENTION) is None


def test_a_recent_cursor_is_no_gap() -> None:
    assert detect_gap(district(timedelta(days=3)), page(NOW), NOW, RETENTION) is None


def test_a_cursor_older_than_retention_never_caught_up_is_a_gap() -> None:
    oldest = NOW - timedelta(days=29, hours=23)
    gap = detect_gap(district(timedelta(days=31)), page(oldest), NOW, RETENTION)
    assert gap is not None
    assert "possible gap" in gap
    assert "Data API" in gap
    assert "PATCH status=active" in gap
    assert (NOW - timedelta(days=31)).isoformat(timespec="seconds") in gap
    assert oldest.isoformat() in gap


def test_an_empty_page_after_an_expired_cursor_is_still_a_gap() -> None:
    gap = detect_gap(district(timedelta(days=45)), page(), NOW, RETENTION)
    assert gap is not None
    assert "until now" in gap


def test_a_quiet_district_that_caught_up_recently_is_no_gap() -> None:
    """No events for 40 days, but polled and caught up an hour ago: nothing can be missing."""
    quiet = district(timedelta(days=40), caught_up_age=timedelta(hours=1))
    assert detect_gap(quiet, page(NOW), NOW, RETENTION) is None


def test_caught_up_long_ago_and_then_down_past_retention_is_a_gap() -> None:
    down = district(timedelta(days=40), caught_up_age=timedelta(days=31))
    assert detect_gap(down, page(NOW), NOW, RETENTION) is not None


def test_the_safety_margin_flags_a_little_before_retention() -> None:
    edge = RETENTION * RETENTION_SAFETY
    just_inside = district(timedelta(seconds=edge - 60))
    just_past = district(timedelta(seconds=edge + 60))
    assert detect_gap(just_inside, page(NOW), NOW, RETENTION) is None
    assert detect_gap(just_past, page(NOW), NOW, RETENTION) is not None


def test_short_retention_in_seconds() -> None:
    """The simulator and tests use retention in seconds (RELAY_CLEVER_RETENTION)."""
    assert detect_gap(district(timedelta(seconds=120)), page(NOW), NOW, 60.0) is not None
    assert detect_gap(district(timedelta(seconds=30)), page(NOW), NOW, 60.0) is None
