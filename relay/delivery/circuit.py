"""Circuit breaking per subscription, in one worker: an endpoint whose attempts keep timing
out is left alone for a while.

A hanging receiver holds a worker's job for the whole delivery timeout per attempt; with
hundreds of such subscriptions (one owner's, say) the worker spends its jobs waiting on them
while everyone else's deliveries queue behind. After ``after`` timeouts in a row the circuit
opens, if those timeouts span at least ``span`` seconds (two delivery timeouts: attempts
that time out together are one stall, and an endpoint that stalled once and answers its retries
must not be left alone): for ``cooldown`` seconds the subscription's jobs step aside to when
it ends (in Redis: no attempt is spent, nothing is lost, the deliveries stay due in the
database). Then one attempt is let through as a probe, with the whole timeout: an answer
closes the circuit, a timeout opens it again for twice as long (up to ``longest``), so a dead
endpoint's jobs come round ever more rarely. Anything but a timeout closes it.
"""

from __future__ import annotations

import random
import time

from relay.delivery.sender import AttemptOutcome

_MAX_TRACKED = 10_000  # subscriptions remembered; beyond it, forget them all rather than grow


class Circuits:
    def __init__(self, *, after: int, span: float, cooldown: float, longest: float) -> None:
        self.after = after
        self.span = span
        self.cooldown = cooldown
        self.longest = longest
        self._streaks: dict[str, tuple[int, float]] = {}  # id → (timeouts in a row, since)
        self._open: dict[str, tuple[float, float]] = {}  # id → (monotonic end, its length)

    def wait(self, subscription_id: str) -> float | None:
        """Seconds the attempt should step aside for, or None: send it (the circuit is
        closed, or this attempt is the probe; the others wait for the probe's answer)."""
        opened = self._open.get(subscription_id)
        if opened is None:
            return None
        until, length = opened
        now = time.monotonic()
        if now >= until:  # this attempt probes; the rest keep away while it is out
            self._open[subscription_id] = (now + length, length)
            return None
        return until - now + random.uniform(0, length / 10)  # spread the returns

    def observe(self, subscription_id: str, outcome: AttemptOutcome) -> None:
        if outcome.result != "timeout":
            self._streaks.pop(subscription_id, None)
            self._open.pop(subscription_id, None)
            return
        if len(self._streaks) >= _MAX_TRACKED:
            self._streaks.clear()
            self._open.clear()
        now = time.monotonic()
        count, since = self._streaks.get(subscription_id, (0, now))
        self._streaks[subscription_id] = (count + 1, since)
        if count + 1 >= self.after and now - since >= self.span:
            previous = self._open.get(subscription_id)
            length = self.cooldown if previous is None else min(previous[1] * 2, self.longest)
            self._open[subscription_id] = (now + length, length)
