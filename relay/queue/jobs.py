"""What a queued job is: attempt ``attempt`` of delivery ``delivery_id``, and nothing more.

The job id says everything a job needs (``deliver:{delivery}:{attempt}[:manual]``), so there
is no payload to write or read. It derives from the delivery and the attempt, so queueing the
same attempt twice (the ingest path and the reconciler racing) is a no-op, and a job for an
attempt that already ran finds the delivery moved on and does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

FIRST_ATTEMPTS_QUEUE = "relay:deliveries"
RETRIES_QUEUE = "relay:retries"
DELIVERY_QUEUES = (FIRST_ATTEMPTS_QUEUE, RETRIES_QUEUE)
CRON_QUEUE = "relay:cron"
_PREFIX = "deliver"


@dataclass(frozen=True, slots=True)
class Job:
    """Attempt ``attempt`` (1 = the first) of ``delivery_id``, due at ``due_at`` (None once
    claimed: the queue's score is not read back). ``manual``: asked for through the API, so
    it gets an id of its own and is queued at once."""

    delivery_id: int
    attempt: int
    due_at: datetime | None = None
    manual: bool = False

    @property
    def id(self) -> str:
        """A manual retry gets an id of its own: the scheduled job for the same attempt may
        sit in the queue until its (later) due time, and must not hold the manual one back."""
        return f"{_PREFIX}:{self.delivery_id}:{self.attempt}" + (":manual" if self.manual else "")

    @property
    def queue(self) -> str:
        return queue_for(self.attempt)

    @classmethod
    def parse(cls, job_id: str) -> Job | None:
        """The job a queued id stands for; None for an id this relay did not write."""
        parts = job_id.split(":")
        if len(parts) not in (3, 4) or parts[0] != _PREFIX:
            return None
        if len(parts) == 4 and parts[3] != "manual":
            return None
        try:
            delivery_id, attempt = int(parts[1]), int(parts[2])
        except ValueError:
            return None
        # "deliver:007:1" would finish as "deliver:7:1" and stay queued forever: not ours
        if parts[1] != str(delivery_id) or parts[2] != str(attempt):
            return None
        return cls(delivery_id, attempt, manual=len(parts) == 4)


def next_attempts(rows: Iterable[tuple[int, int, bool]], due_at: datetime) -> list[Job]:
    """The next job of each (delivery id, attempts made so far, manual) row, due ``due_at``:
    what a statement that makes deliveries due returns, as the jobs to queue."""
    return [Job(int(i), int(n) + 1, due_at, bool(m)) for i, n, m in rows]


def queue_for(attempt: int) -> str:
    """First attempts and retries have queues (and worker slots) of their own, so a backlog
    of retries to a dead endpoint never delays first attempts to healthy ones."""
    return FIRST_ATTEMPTS_QUEUE if attempt <= 1 else RETRIES_QUEUE
