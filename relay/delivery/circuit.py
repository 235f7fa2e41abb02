"""Circuit breaking per subscription, in one worker: an endpoint whose attempts keep timing
out stops being sent to for a while.

A hanging receiver holds a worker's job for the whole delivery timeout per attempt; with
hundreds of such subscriptions (one owner's, say) the worker spends its jobs waiting on them
while everyone else's deliveries queue behind. After ``after`` timeouts in a row the circuit
opens: for ``cooldown`` seconds the subscription's attempts are not sent but recorded as
failed ("not sent: circuit open"), so they follow the retry schedule like any failure, cost a
row each instead of a job for 15 s, and their deliveries stay visible in the log. Then one
attempt is let through as a probe (with the whole timeout): an answer closes the circuit, a
timeout opens it again. Anything but a timeout closes it: the endpoint is reachable.
"""

from __future__ import annotations

import time

from relay.delivery.sender import AttemptOutcome

_MAX_TRACKED = 10_000  # subscriptions whose streak is remembered; beyond it, forget them all


class Circuits:
    def __init__(self, *, after: int, cooldown: float) -> None:
        self.after = after
        self.cooldown = cooldown
        self._streaks: dict[str, int] = {}  # subscription id → timeouts in a row
        self._open_until: dict[str, float] = {}  # subscription id → monotonic time

    def refusal(self, subscription_id: str) -> AttemptOutcome | None:
        """The outcome to record instead of sending, or None: send (the circuit is closed,
        or this attempt is the probe; the others keep waiting for the probe's answer)."""
        until = self._open_until.get(subscription_id)
        if until is None:
            return None
        now = time.monotonic()
        if now >= until:
            self._open_until[subscription_id] = now + self.cooldown  # the probe goes
            return None
        streak = self._streaks.get(subscription_id, self.after)
        return AttemptOutcome(
            status_code=None,
            duration_ms=0,
            error=f"not sent: circuit open after {streak} timeouts in a row; "
            f"an attempt within {self.cooldown:g}s probes the endpoint again",
        )

    def observe(self, subscription_id: str, outcome: AttemptOutcome) -> None:
        if outcome.result != "timeout":
            self._streaks.pop(subscription_id, None)
            self._open_until.pop(subscription_id, None)
            return
        if len(self._streaks) >= _MAX_TRACKED:
            self._streaks.clear()
            self._open_until.clear()
        streak = self._streaks[subscription_id] = self._streaks.get(subscription_id, 0) + 1
        if streak >= self.after:
            self._open_until[subscription_id] = time.monotonic() + self.cooldown
