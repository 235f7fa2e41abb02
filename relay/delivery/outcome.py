"""The outcome step: what an attempt's result means for its delivery (pure; no I/O).

Success ends the delivery; 410 fails it (and disables the subscription, ``relay.delivery.
record``); any other failure schedules the next attempt or, with the schedule used up, fails
it. A manual retry (``POST /v1/deliveries/{id}/retry``) is counted apart from the schedule:
when it fails, the delivery goes back to where the schedule had it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from relay.db.models import DeliveryStatus
from relay.delivery.attempt import Attempt
from relay.delivery.schedule import RETRY_AFTER_STATUSES, RetrySchedule
from relay.delivery.sender import AttemptOutcome


def next_state(
    outcome: AttemptOutcome, position: int, schedule: RetrySchedule, now: datetime
) -> tuple[DeliveryStatus, datetime | None]:
    """``position`` is the attempt's place in the schedule (1 = the first attempt)."""
    if outcome.succeeded:
        return DeliveryStatus.SUCCEEDED, None
    if outcome.gone:
        return DeliveryStatus.FAILED, None
    retry_after = outcome.retry_after if outcome.status_code in RETRY_AFTER_STATUSES else None
    delay = schedule.delay_after(position, retry_after=retry_after, now=now)
    if delay is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.RETRYING, now + timedelta(seconds=delay)


def state_after(
    attempt: Attempt, outcome: AttemptOutcome, schedule: RetrySchedule, now: datetime
) -> tuple[DeliveryStatus, datetime | None]:
    """The delivery's status and next attempt time once ``attempt`` ended with ``outcome``."""
    manual = attempt.manual_retry
    # the attempt's place in the schedule; for a manual retry, the last scheduled one before it
    position = attempt.number - attempt.manual_attempts - (1 if manual else 0)
    if manual and not outcome.succeeded and not outcome.gone:
        delay = schedule.next_delay(position) if position >= 1 else 0.0
        if delay is None:
            return DeliveryStatus.FAILED, None
        return DeliveryStatus.RETRYING, now + timedelta(seconds=delay)
    return next_state(outcome, position, schedule, now)
