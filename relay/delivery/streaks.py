"""Logging a failing endpoint once per failure streak, not once per attempt.

A receiver that is down fails every attempt of every delivery to it: one warning per attempt
made a 15-minute soak with a few dead receivers write 85,000 identical lines. Each worker
keeps, per subscription, the streak it is seeing: the first failure is a warning (with what
failed), later ones are only counted, a long streak is reminded of at most every
``remind_every`` seconds, and the end of the streak (a success, or the subscription disabled)
is one line with the count. Every attempt stays in the delivery log and at DEBUG.

The state is per worker process and in memory: a worker that restarts mid-streak warns once
more, and N workers log a streak N times at most. Entries are dropped when the streak ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay.delivery.sender import AttemptOutcome

logger = logging.getLogger("relay.delivery")


@dataclass
class _Streak:
    started: float
    reminded: float
    failures: int = 1


def _what_failed(outcome: AttemptOutcome) -> dict[str, object]:
    return {"status_code": outcome.status_code, "error": outcome.error}


class FailureStreaks:
    def __init__(
        self, remind_every: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.remind_every = remind_every
        self._clock = clock
        self._streaks: dict[str, _Streak] = {}

    def failing(self) -> int:
        """How many subscriptions this worker currently sees failing."""
        return len(self._streaks)

    def attempted(self, subscription_id: str, delivery_id: int, outcome: AttemptOutcome) -> None:
        if outcome.succeeded:
            self._recovered(subscription_id)
            return
        now = self._clock()
        streak = self._streaks.get(subscription_id)
        extra = {"subscription_id": subscription_id, **_what_failed(outcome)}
        if streak is None:
            self._streaks[subscription_id] = _Streak(started=now, reminded=now)
            logger.warning(
                "endpoint failing: further failures of this subscription are counted, not "
                "logged, until it recovers (each attempt is in the delivery log)",
                extra=extra | {"delivery_id": delivery_id},
            )
        else:
            streak.failures += 1
            if now - streak.reminded >= self.remind_every:
                streak.reminded = now
                logger.warning(
                    "endpoint still failing",
                    extra=extra | self._summary(streak, now),
                )
        if outcome.gone:
            self.disabled(subscription_id, "the endpoint answered 410 Gone")

    def disabled(self, subscription_id: str, reason: str) -> None:
        """The subscription is disabled: its streak ends (the relay stops sending)."""
        streak = self._streaks.pop(subscription_id, None)
        if streak is not None:
            logger.warning(
                "endpoint failing streak ended: subscription disabled",
                extra={"subscription_id": subscription_id, "reason": reason}
                | self._summary(streak, self._clock()),
            )

    def _recovered(self, subscription_id: str) -> None:
        streak = self._streaks.pop(subscription_id, None)
        if streak is not None:
            logger.info(
                "endpoint recovered",
                extra={"subscription_id": subscription_id} | self._summary(streak, self._clock()),
            )

    @staticmethod
    def _summary(streak: _Streak, now: float) -> dict[str, object]:
        return {"failed_attempts": streak.failures, "failing_for_s": round(now - streak.started)}
