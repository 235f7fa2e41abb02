"""Jobs that stepped aside, remembered by delivery, so that claiming them again while their
reason holds needs no database read.

One owner's 250 hanging subscriptions (``bench/neighbours.py``) queue 500 deliveries a second
that cannot go: first their owner's share of the worker is all held by attempts waiting for
the timeout, then their circuits are open. Each such job came back every 1-3 s (a busy owner)
or once per cooldown, and was read from the database each time only to learn its subscription
and step aside again: that churn took most of a worker's CPU and put other owners' deliveries
seconds behind (p50 2-4 s, from 1 s). A job remembered here is deferred again at its claim,
before anything is read, while its subscription's circuit is open or its owner's share is
all taken; and each time a busy owner turns it away it comes back later (0.25-0.75 s,
doubling).
A throttled subscription's jobs come back in line (``Lines``), one per 1/``max_per_second``:
a backlog of 20,000 jobs to a subscription at 20/s, each back within a second, was 20,000
claims and reads a second for 20 attempts (``bench/limits.py``).

In memory, per worker, at most ``limit`` jobs (the least recently seen are forgotten: they
are read from the database once more). Nothing here decides what is sent: a job let through
is loaded and checked as any other.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass

#: a job turned away by a busy owner comes back after 0.25-0.75 s times 2 ** (times turned away
#: - 1), the doubling capped here (32-96 s): an owner whose share stays full for minutes has
#: its jobs claimed about as often as its slots free up, not every second each. The first
#: wait is short because a share is most often full for a moment, in a burst to many
#: subscriptions: starting at 1-3 s, the fan-out of 20 events to 300 subscriptions waited
#: for its last turned-away jobs (bench/fanout.py while 1,000 districts were polled: 1,119
#: -> 1,500/s), while a hanging owner's jobs reach the long waits two turns later
_BUSY_OWNER_DOUBLINGS = 7


def open_circuit_wait(left: float) -> float:
    """A job whose subscription's circuit stays open ``left`` seconds: back just after it
    (spread by a tenth, so a backlog does not return in one instant)."""
    return left * random.uniform(1.0, 1.1)


def busy_slots_wait() -> float:
    """A job whose subscription's slots here are all taken: back soon, as they free up
    within a receiver's answer."""
    return random.uniform(0.5, 1.5)


@dataclass(slots=True)
class SteppedAside:
    """What a job that stepped aside belonged to."""

    subscription_id: str
    owner: str
    busy_owner: int = 0  # times its owner's share was full when it came


class Aside:
    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._jobs: OrderedDict[int, SteppedAside] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, delivery_id: int) -> SteppedAside | None:
        return self._jobs.get(delivery_id)

    def note(self, delivery_id: int, subscription_id: str, owner: str) -> SteppedAside:
        """The delivery's job stepped aside (again): remember it, most recent last."""
        seen = self._jobs.get(delivery_id)
        if seen is None:
            seen = self._jobs[delivery_id] = SteppedAside(subscription_id, owner)
            if len(self._jobs) > self.limit:
                self._jobs.popitem(last=False)
        else:
            self._jobs.move_to_end(delivery_id)
        return seen

    def forget(self, delivery_id: int) -> None:
        """The delivery's job went ahead (or has nothing left to send)."""
        self._jobs.pop(delivery_id, None)

    @staticmethod
    def busy_owner_wait(job: SteppedAside) -> float:
        """Seconds until a job its busy owner turned away comes back (counting this time)."""
        job.busy_owner += 1
        return random.uniform(0.25, 0.75) * (1 << min(job.busy_owner - 1, _BUSY_OWNER_DOUBLINGS))


class Lines:
    """A waiting line per key (a throttled subscription): each job turned away is given the
    next place, ``spacing`` seconds after the one before, so the key's backlog comes back
    about as fast as it can go, not all at once."""

    def __init__(self, keep: int = 1000) -> None:
        self._prune_at = self.keep = keep
        self._last: dict[str, float] = {}  # key -> monotonic time of its last place

    def __len__(self) -> int:
        return len(self._last)

    def place(self, key: str, spacing: float) -> float:
        """Seconds from now until the next place in ``key``'s line."""
        now = time.monotonic()
        at = max(self._last.get(key, now), now) + spacing
        self._last[key] = at
        if len(self._last) > self._prune_at:  # lines that ended: nobody waits in them
            self._last = {k: t for k, t in self._last.items() if t > now}
            self._prune_at = max(self.keep, 2 * len(self._last))  # not again at once
        return at - now
