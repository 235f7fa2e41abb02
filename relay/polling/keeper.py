"""The poll leases one worker holds, kept together: one renewal for all of them every few
seconds, instead of writes per district per poll.

A district's poller registers its lease here when the supervisor takes it and drops it when
it ends. Every ``every`` seconds the keeper, in one transaction (``leases.renew_held``):
extends every registered lease, writes the bookkeeping of the quiet polls since the last
renewal (an empty page that changed nothing else is not written when it happens: only its
``last_polled_at`` and ``caught_up_at``, here), and reads back which districts are still
this worker's to poll and whether anyone else changed them (an operator's PATCH, token
discovery: their ``updated_at`` moved), so that their pollers read them again. Between
renewals a poller works from the district as it last read or wrote it.

What this costs in failure cases:

- A killed worker's leases were last extended at most ``every`` seconds before it died:
  another worker takes its districts within ``RELAY_POLL_LEASE`` of the kill, as before. Its
  quiet polls of those last seconds never reach ``last_polled_at`` (it is at most ``every``
  seconds behind while the worker lives).
- A worker that cannot renew (database away, a stalled event loop) stops polling a district
  before its lease may have lapsed (``Lease.usable``: the lease counts from the monotonic time
  the renewal was sent, and a poll needs half a lease of it left, the most a request may
  take), so no two workers poll a district at once; and it stores nothing without its lease
  and cursor still holding (``store_page`` checks both with the row locked).
- An operator's pause or new token reaches the poller at the next renewal, up to ``every``
  seconds later (before: at its next poll). A page is never stored for a district paused
  meanwhile (``store_page`` checks the status too); only its next polls may still be sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from relay.db import Database
from relay.polling import leases

logger = logging.getLogger("relay.poll")


@dataclass
class Lease:
    """One district's lease as its poller and the keeper share it."""

    district_id: str
    #: monotonic time after which another worker may hold the district
    expires: float
    #: the district's ``updated_at`` as its poller last read or wrote it (None: not read yet)
    seen_updated_at: datetime | None = None
    #: a quiet poll's time, not written yet
    polled_at: datetime | None = None
    #: why the poller must stop (the lease is gone, the district paused or deleted)
    lost: str | None = None
    #: someone else changed the district: the poller reads it again before its next poll
    changed: bool = False

    def usable(self, needed: float) -> bool:
        """Still ours for at least ``needed`` more seconds, for all the keeper knows."""
        return self.lost is None and time.monotonic() + needed < self.expires


class LeaseKeeper:
    """Renews over a database engine of its own (one connection): behind a burst of pages
    being stored, a renewal waiting its turn for one of the shared pool's connections could
    take longer than the leases have left, and the worker would drop every district it
    holds at once."""

    def __init__(self, database_url: str, owner: str, lease_seconds: float, every: float) -> None:
        self.database_url = database_url
        self.db: Database | None = None
        self.owner = owner
        self.lease_seconds = lease_seconds
        #: at most a third of a lease, so a lease always has two thirds of it left when renewed
        self.every = min(every, lease_seconds / 3)
        self.held: dict[str, Lease] = {}

    def hold(self, district_id: str, taken_at: float) -> Lease:
        """Register a lease the supervisor took; ``taken_at`` is the monotonic time just
        before the statement that took it was sent."""
        lease = Lease(district_id, expires=taken_at + self.lease_seconds)
        self.held[district_id] = lease
        return lease

    def drop(self, lease: Lease) -> None:
        if self.held.get(lease.district_id) is lease:
            del self.held[lease.district_id]

    async def step(self) -> float:
        """Renew, then wait until the next renewal (a step for ``loops.supervise``)."""
        await self.renew()
        return self.every

    async def close(self) -> None:
        if self.db is not None:
            await self.db.dispose()
            self.db = None

    async def renew(self) -> None:
        held = list(self.held.values())
        if not held:
            return
        polled = {lease.district_id: lease.polled_at for lease in held if lease.polled_at}
        for lease in held:
            lease.polled_at = None
        sent_at = time.monotonic()
        ids = [lease.district_id for lease in held]
        if self.db is None:
            self.db = Database(self.database_url)
        try:
            renewal = await leases.renew_held(self.db, self.owner, ids, self.lease_seconds, polled)
        except BaseException:
            for lease in held:  # written next time, unless a newer poll is waiting
                lease.polled_at = lease.polled_at or polled.get(lease.district_id)
            raise
        for lease in held:
            updated_at = renewal.renewed.get(lease.district_id)
            if lease.district_id in renewal.busy:  # its page store extends the lease
                lease.polled_at = lease.polled_at or polled.get(lease.district_id)
                continue
            if updated_at is None:
                lease.lost = "the lease is gone, or the district is no longer to be polled"
                continue
            lease.expires = max(lease.expires, sent_at + self.lease_seconds)
            if lease.seen_updated_at is not None and updated_at != lease.seen_updated_at:
                lease.changed = True
        took = time.monotonic() - sent_at
        extra = {"worker": self.owner, "leases": len(held), "quiet_polls": len(polled)}
        extra["duration_ms"] = round(took * 1000, 1)
        if took > self.every:
            logger.warning("poll lease renewal was slow", extra=extra)
        else:
            logger.debug("poll leases renewed", extra=extra)
