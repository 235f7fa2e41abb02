"""Polling Clever: one task per district this worker holds the lease for.

The task pages ``/v3.1/events`` from the stored cursor until caught up, storing each page in
one transaction with its deliveries and the cursor advance (``relay.ingest.store_page``), then
waits ``RELAY_POLL_INTERVAL`` and polls again, renewing its lease as it goes. Errors are
recorded on the district (``last_error``; ``status`` = error after repeated failures) and
retried with capped, jittered backoff; a 429 waits for Clever's reset; a 401 first fetches the
district's token again when client credentials are configured.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta

from sqlmodel import col, update

from relay import leases
from relay._exceptions import (
    CleverError,
    CleverRateLimited,
    CleverTransportError,
    CleverUnauthorized,
    LeaseLost,
)
from relay.clever.backoff import Backoff
from relay.clever.events import EventsPage, object_id_time
from relay.clever.ratelimit import token_key
from relay.clever.tokens import fetch_district_tokens
from relay.db import utcnow
from relay.db.models import District, DistrictStatus
from relay.ingest import store_page
from workers.context import WorkerContext, sleep_until

logger = logging.getLogger("relay.poll")

ERROR_AFTER_FAILURES = 5
UNAUTHORIZED_AFTER_401S = 3  # with credentials, when Clever keeps listing the rejected token
RETENTION_SAFETY = 0.97  # call a gap a little before Clever's retention is exactly reached
BACKOFF = Backoff(base=1.0, cap=60.0)


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


class PacedOut(Exception):
    """The pacer holds this district's token (after a 429, or spreading a low window)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"paced for {wait:.1f}s")
        self.wait = wait


class DistrictPoller:
    def __init__(self, app: WorkerContext, district_id: str, stop: asyncio.Event) -> None:
        self.app = app
        self.district_id = district_id
        self.stop = stop
        self.failures = 0
        self.unauthorized = 0  # 401s in a row whose token Clever still lists
        self.token_in_use: str | None = None  # the token of the last request
        self.log_extra = {"district_id": district_id, "worker": app.worker_id}

    @property
    def lease_seconds(self) -> float:
        return self.app.settings.poll_lease

    async def run(self) -> None:
        """Poll until stopped, paused, the lease is lost, or the next poll is far away."""
        try:
            while not self.stop.is_set():
                wait = await self.cycle()
                if wait is None:
                    return
                loop = asyncio.get_running_loop()
                if wait > self.lease_seconds / 2:
                    poll_after = utcnow() + timedelta(seconds=wait)
                    await leases.release(
                        self.app.db, self.district_id, self.app.worker_id, poll_after=poll_after
                    )
                    logger.info(
                        "poll lease released until the next poll",
                        extra=self.log_extra | {"poll_after": poll_after.isoformat()},
                    )
                    return
                if await sleep_until(loop.time() + wait, self.stop):
                    break
                if not await leases.renew(
                    self.app.db, self.district_id, self.app.worker_id, self.lease_seconds
                ):
                    return
            await leases.release(self.app.db, self.district_id, self.app.worker_id)
        except LeaseLost as exc:
            logger.info("poll stopped", extra=self.log_extra | {"reason": str(exc)})
            await leases.release(self.app.db, self.district_id, self.app.worker_id)
        except Exception:
            logger.exception("poller crashed; the lease will expire", extra=self.log_extra)

    async def cycle(self) -> float | None:
        """Page until caught up. Returns seconds until the next poll, None to stop."""
        try:
            await self.catch_up()
        except PacedOut as paced:
            return paced.wait
        except CleverRateLimited as exc:
            # The pacer holds the token until the reset plus its margin: wait that long.
            wait = max(exc.reset_at - utcnow().timestamp(), self.pacer_delay(self.token_in_use))
            await self.note_error(f"rate limited by Clever until its reset ({wait:.0f}s)")
            return max(wait, 0.0)
        except CleverUnauthorized as exc:
            refreshed = await self.refresh_token()
            if refreshed is True:
                return 0.0
            self.unauthorized += 1
            if refreshed is None or self.unauthorized >= UNAUTHORIZED_AFTER_401S:
                await self.mark_unauthorized(str(exc))
                return None
            # Clever still lists the token we used: a one-off 401; back off and try again.
            wait = BACKOFF.next_delay(self.unauthorized)
            await self.note_error(f"{exc} (the token is still current; retrying)")
            return max(wait, 0.1)
        except CleverError as exc:
            self.failures += 1
            wait = BACKOFF.next_delay(self.failures - 1)
            await self.note_error(str(exc), count_failure=True)
            logger.warning(
                "poll failed", extra=self.log_extra | {"error": str(exc), "retry_in": wait}
            )
            return max(wait, 0.1)
        self.failures = 0
        self.unauthorized = 0
        return self.app.settings.poll_interval

    async def load(self) -> District:
        async with self.app.db.read() as session:
            district = await session.get(District, self.district_id)
        if district is None or district.lease_owner != self.app.worker_id:
            raise LeaseLost(f"district {self.district_id}: lease or district gone")
        if district.status not in leases.POLLABLE:
            raise LeaseLost(f"district {self.district_id}: status is {district.status}")
        return district

    async def catch_up(self) -> None:
        district = await self.load()
        self.token_in_use = district.token
        if district.cursor is None and district.start_from == "latest" and not district.seeded:
            await self.seed(district)
            district = await self.load()
        limit = self.app.settings.clever_page_size
        while not self.stop.is_set():
            page = await self.fetch(district, limit)
            now = utcnow()
            gap = detect_gap(district, page, now, self.app.settings.clever_retention)
            caught_up = len(page.events) < limit
            result = await store_page(
                self.app.db,
                district_id=self.district_id,
                lease_owner=self.app.worker_id,
                expected_cursor=district.cursor,
                events=page.events,
                caught_up=caught_up,
                lease_seconds=self.lease_seconds,
                gap=gap,
            )
            if gap:
                logger.warning("gap detected", extra=self.log_extra | {"detail": gap})
            if page.events:
                logger.info(
                    "events stored",
                    extra=self.log_extra
                    | {
                        "stored": result.stored,
                        "deliveries": len(result.due),
                        "cursor": page.last_id,
                        "clever_request_id": page.request_id,
                    },
                )
            await self.app.dispatcher.enqueue(result.due)
            if caught_up:
                return
            district = await self.load()

    def pacer_delay(self, token: str | None) -> float:
        return 0.0 if token is None else self.app.clever.pacer.delay_for(token_key(token))

    async def fetch(self, district: District, limit: int) -> EventsPage:
        """One page, sent only while the lease is surely ours: not while the pacer holds the
        token (the caller waits, releasing the lease if that is long), and abandoned after
        half a lease so a hung request can't outlive the lease another worker may then take."""
        self.token_in_use = district.token
        delay = self.pacer_delay(district.token)
        if delay > 0:
            raise PacedOut(delay)
        budget = self.lease_seconds / 2
        try:
            async with asyncio.timeout(budget):
                return await self.app.clever.list_events(
                    district.token, starting_after=district.cursor, limit=limit
                )
        except TimeoutError:
            raise CleverTransportError(
                f"GET /v3.1/events took longer than {budget:g}s (half the poll lease)"
            ) from None

    async def seed(self, district: District) -> None:
        """``start_from=latest``: begin after Clever's newest event (none yet: from the
        first one that appears)."""
        latest = await self.app.clever.latest_event_id(district.token)
        async with self.app.db.write() as session:
            await session.exec(
                update(District)
                .where(col(District.id) == self.district_id)
                .where(col(District.lease_owner) == self.app.worker_id)
                .where(col(District.cursor).is_(None))
                .values(cursor=latest, seeded=True, caught_up_at=utcnow(), updated_at=utcnow())
            )
        logger.info(
            "cursor seeded at Clever's newest event", extra=self.log_extra | {"cursor": latest}
        )

    async def refresh_token(self) -> bool | None:
        """After a 401, ask Clever for the district's current token (tokens rotate).

        True: a new token is stored. False: nothing better to use now (Clever still lists the
        rejected token, or could not be asked): try again later. None: give up (no client
        credentials, or the district no longer shares data with the app)."""
        credentials = self.app.settings.clever_credentials
        if credentials is None:
            return None
        try:
            tokens = await fetch_district_tokens(
                self.app.settings.clever_oauth_url, *credentials, district=self.district_id
            )
        except CleverError as exc:
            logger.warning("token refresh failed", extra=self.log_extra | {"error": str(exc)})
            return False
        rejected = self.token_in_use
        fresh = next((t.access_token for t in tokens if t.access_token != rejected), None)
        if fresh is None:
            # Clever still lists the rejected token (a passing 401), or none at all (the
            # district stopped sharing with the app: unauthorized for real).
            return False if tokens else None
        async with self.app.db.write() as session:
            result = await session.exec(
                update(District)
                .where(col(District.id) == self.district_id)
                .where(col(District.lease_owner) == self.app.worker_id)
                .values(token=fresh, token_source="discovered", updated_at=utcnow())
            )
            if result.rowcount != 1:
                raise LeaseLost(f"district {self.district_id}: lease lost during token refresh")
        logger.info("district token refreshed after a 401", extra=self.log_extra)
        return True

    async def mark_unauthorized(self, error: str) -> None:
        async with self.app.db.write() as session:
            await session.exec(
                update(District)
                .where(col(District.id) == self.district_id)
                .where(col(District.lease_owner) == self.app.worker_id)
                .values(
                    status=DistrictStatus.UNAUTHORIZED,
                    last_error=error,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=utcnow(),
                )
            )
        logger.warning("district unauthorized", extra=self.log_extra | {"error": error})

    async def note_error(self, error: str, *, count_failure: bool = False) -> None:
        now = utcnow()
        values: dict[str, object] = {
            "last_error": error,
            "last_polled_at": now,
            "updated_at": now,
            # the caller sleeps up to half a lease before renewing: keep the lease valid
            "lease_until": now + timedelta(seconds=self.lease_seconds),
        }
        if count_failure:
            values["consecutive_failures"] = District.consecutive_failures + 1
        async with self.app.db.write() as session:
            await session.exec(
                update(District)
                .where(col(District.id) == self.district_id)
                .where(col(District.lease_owner) == self.app.worker_id)
                .values(**values)
            )
            if count_failure and self.failures >= ERROR_AFTER_FAILURES:
                await session.exec(
                    update(District)
                    .where(col(District.id) == self.district_id)
                    .where(col(District.status) == DistrictStatus.ACTIVE)
                    .values(status=DistrictStatus.ERROR)
                )


class PollSupervisor:
    """Takes the leases of due districts and runs a :class:`DistrictPoller` for each."""

    def __init__(self, app: WorkerContext, *, scan_interval: float = 0.5) -> None:
        self.app = app
        self.scan_interval = scan_interval
        self.stop = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            try:
                await self.scan()
            except Exception:
                logger.exception("poll scan failed; retrying")
            # Jittered: workers scanning in lockstep would always hand a district released
            # until a whole-second 429 reset to the same worker (and query in bursts).
            pause = self.scan_interval * random.uniform(0.5, 1.5)
            if await sleep_until(loop.time() + pause, self.stop):
                break
        if self.tasks:
            await asyncio.wait(self.tasks.values(), timeout=self.app.settings.poll_lease)

    async def scan(self) -> None:
        for district_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[district_id]
        for district_id in await leases.due_districts(self.app.db):
            if district_id in self.tasks:
                continue
            if await leases.acquire(
                self.app.db, district_id, self.app.worker_id, self.app.settings.poll_lease
            ):
                extra = {"district_id": district_id, "worker": self.app.worker_id}
                logger.info("poll lease taken", extra=extra)
                poller = DistrictPoller(self.app, district_id, self.stop)
                self.tasks[district_id] = asyncio.create_task(
                    poller.run(), name=f"poll:{district_id}"
                )
