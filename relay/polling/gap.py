"""The gap rule: a cursor Clever may have expired without saying so.

Clever keeps events for a limited time and answers a cursor older than that with 200, from
its oldest retained event (``docs/architecture.md``): the events in between are gone, silently.
The poller applies this rule to every page and stores the result on the district
(``status: gap_detected`` with the window in ``last_error``) until an operator acknowledges it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from relay.clever.events import EventsPage, object_id_time
from relay.db.models import District

#: call a gap a little before Clever's retention is exactly reached
RETENTION_SAFETY = 0.97


def detect_gap(district: District, page: EventsPage, now: datetime, retention: float) -> str | None:
    """A cursor Clever may have expired: events between what we last saw and the oldest
    retained event may be gone, silently (Clever answers 200 from its oldest event).

    We have seen every event up to the cursor's time, and, if a poll ever caught up, up to
    that poll. Anything newer than both and older than Clever's retention is at risk.
    """
    if district.cursor is None:
        return None
    seen_until = object_id_time(district.cursor)
    if district.caught_up_at is not None:
        seen_until = max(seen_until, district.caught_up_at)
    horizon = now - timedelta(seconds=retention * RETENTION_SAFETY)
    if seen_until >= horizon:
        return None
    oldest = page.events[0].created.isoformat() if page.events else "now"
    return (
        f"possible gap: the relay last saw this district's events up to "
        f"{seen_until.isoformat(timespec='seconds')}, older than Clever's retention; events "
        f"from then until {oldest} may be lost. Resync from Clever's Data API, then "
        f"PATCH status=active to acknowledge."
    )
