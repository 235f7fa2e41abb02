"""Polling one district: a task per district this worker holds the lease for.

The task pages ``/v3.1/events`` from the stored cursor until caught up, storing each page in
one transaction with its deliveries and the cursor advance (``relay.polling.store``), then
waits ``RELAY_POLL_INTERVAL`` and polls again, renewing its lease as it goes. Errors are
recorded on the district (``last_error``; ``status`` = error after repeated failures) and
retried with capped, jittered backoff; a 429 waits for Clever's reset; a 401 first fetches the
district's token again when client credentials are configured. A token this worker's keys
cannot decrypt puts the district in ``error`` at once, saying so, and is retried with the same
backoff (a new token, or the key given to the worker, ends it); no other district notices.
Every write to the district is guarded by the lease (``relay.db.districts.update_leased``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from relay import counters
from relay._exceptions import (
    CleverBadBody,
    CleverError,
    CleverRateLimited,
    CleverResponseTooLarge,
    CleverTransportError,
    CleverUnauthorized,
    LeaseLost,
    PacedOut,
    SecretUnreadable,
)
from relay.clever.client import CleverClient
from relay.clever.events import EventsPage
from relay.clever.ratelimit import token_key
from relay.clever.tokens import fetch_district_tokens
from relay.db import Database, utcnow
from relay.db.districts import update_leased
from relay.db.engine import refused
from relay.db.models import WITH_TOKEN, District, DistrictStatus, Sync
from relay.fanout import operational
from relay.loops import pause
from relay.polling import leases
from relay.polling.gap import detect_gap
from relay.polling.keeper import Lease
from relay.polling.store import PageResult, store_page
from relay.queue import Job, RedisQueue
from relay.roster import sync as roster_sync
from relay.roster import syncs
from relay.settings import Settings
from relay.tuning import PollingTuning

logger = logging.getLogger("relay.poll")

#: a district's ``last_error`` while its token cannot be decrypted
UNREADABLE_TOKEN = (
    "its Clever token cannot be decrypted with this worker's RELAY_ENCRYPTION_KEY (it was "
    "written with a key the worker does not have): PATCH the district with its token again, "
    "or give the workers that key"
)


@dataclass(frozen=True)
class PollingContext:
    """What every poller of a worker shares."""

    settings: Settings
    db: Database
    clever: CleverClient
    queue: RedisQueue
    worker_id: str
    tuning: PollingTuning = field(default_factory=PollingTuning)


@dataclass
class IngestSummary:
    """One INFO line per poll burst that paged (a backlog), and otherwise at most one per
    ``every`` seconds for a caught-up district: a line per page at 1 event a second was most
    of ``relay run``'s terminal. Each page is a DEBUG line."""

    every: float
    pages: int = 0
    burst_pages: int = 0
    stored: int = 0
    deliveries: int = 0
    cursor: str | None = None
    since: float = field(default_factory=time.monotonic)

    def add(self, stored: int, deliveries: int, cursor: str | None) -> None:
        self.pages += 1
        self.burst_pages += 1
        self.stored += stored
        self.deliveries += deliveries
        self.cursor = cursor

    def burst_ended(self, extra: dict[str, Any]) -> None:
        if self.burst_pages > 1 or time.monotonic() - self.since >= self.every:
            self.flush(extra)
        self.burst_pages = 0

    def flush(self, extra: dict[str, Any]) -> None:
        if self.pages:
            logger.info(
                "events stored",
                extra=extra
                | {
                    "pages": self.pages,
                    "stored": self.stored,
                    "deliveries": self.deliveries,
                    "cursor": self.cursor,
                    "over_s": round(time.monotonic() - self.since, 1),
                },
            )
        self.pages = self.burst_pages = self.stored = self.deliveries = 0
        self.since = time.monotonic()


def quiet(district: District) -> bool:
    """An empty page would change nothing of this district but its poll times: it is caught
    up, has no failures to reset, and no error to clear or recover from (``store_page``'s
    ``_change_status`` on an empty page leaves it as it is)."""
    if not district.caught_up or district.consecutive_failures:
        return False
    if district.status == DistrictStatus.GAP_DETECTED:
        return True  # keeps its explanation until acknowledged
    return district.status == DistrictStatus.ACTIVE and district.last_error is None


class DistrictPoller:
    def __init__(
        self, app: PollingContext, district_id: str, stop: asyncio.Event, lease: Lease
    ) -> None:
        self.app = app
        self.district_id = district_id
        self.stop = stop
        self.lease = lease  # renewed by the worker's LeaseKeeper
        self.district: District | None = None  # as this poller last read or wrote it
        self.failures = 0
        self.unauthorized = 0  # 401s in a row whose token Clever still lists
        self.token_in_use: str | None = None  # the token of the last request
        self.page_size: int | None = None  # smaller than the setting after too large a page
        self.syncing = False  # a sync of the district runs (or failed and will go on)
        self.log_extra = {"district_id": district_id, "worker": app.worker_id}
        self.ingested = IngestSummary(app.tuning.stored_summary_every)

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
                if await pause(wait, self.stop):
                    break
                if self.lease.lost is not None:
                    raise LeaseLost(f"district {self.district_id}: {self.lease.lost}")
            await leases.release(self.app.db, self.district_id, self.app.worker_id)
            self.ingested.flush(self.log_extra)
        except LeaseLost as exc:
            logger.info("poll stopped", extra=self.log_extra | {"reason": str(exc)})
            await leases.release(self.app.db, self.district_id, self.app.worker_id)
        except Exception:
            logger.exception("poller crashed; the lease will expire", extra=self.log_extra)

    async def cycle(self) -> float | None:
        """Page until caught up. Returns seconds until the next poll, None to stop. Polls of
        a caught-up district start ``RELAY_POLL_INTERVAL`` apart, however long one took."""
        started = time.monotonic()
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
            if refreshed is None or self.unauthorized >= self.app.tuning.unauthorized_after_401s:
                await self.mark_unauthorized(str(exc))
                return None
            # Clever still lists the token we used: a one-off 401; back off and try again.
            wait = self.app.tuning.backoff.next_delay(self.unauthorized)
            await self.note_error(f"{exc} (the token is still current; retrying)")
            return max(wait, 0.1)
        except SecretUnreadable:
            self.failures += 1
            wait = self.app.tuning.backoff.next_delay(self.failures - 1)
            if await self.note_error(UNREADABLE_TOKEN, count_failure=True, error_now=True):
                logger.warning(
                    "district in error: its token cannot be decrypted", extra=self.log_extra
                )
            return max(wait, 0.1)
        except CleverError as exc:
            if isinstance(exc, CleverResponseTooLarge):
                self.page_size = max(1, exc.limit // 4)  # until caught up again
            self.failures += 1
            wait = self.app.tuning.backoff.next_delay(self.failures - 1)
            await self.note_error(str(exc), count_failure=True)
            if self.syncing and self.failures >= self.app.tuning.error_after_failures:
                self.syncing = False
                self.failures = 0  # polling starts afresh from the cursor the sync took
                await self.app.queue.enqueue(
                    await roster_sync.fail(
                        self.app.db,
                        self.district_id,
                        self.app.worker_id,
                        str(exc),
                        to=DistrictStatus.ERROR,
                    )
                )
            logger.warning(
                "poll failed", extra=self.log_extra | {"error": str(exc), "retry_in": wait}
            )
            return max(wait, 0.1)
        self.failures = 0
        self.unauthorized = 0
        self.page_size = None
        return max(0.0, started + self.app.settings.poll_interval - time.monotonic())

    async def load(self) -> District:
        """The district as this poller last read or wrote it; read again only when the
        keeper saw someone else change it (or after a write whose result it did not keep)."""
        if not self.lease.usable(self.lease_seconds / 2):
            reason = self.lease.lost or "the lease was not renewed in time"
            raise LeaseLost(f"district {self.district_id}: {reason}")
        if self.district is not None and not self.lease.changed:
            return self.district
        self.lease.changed = False
        async with self.app.db.read() as session:
            # the token is the one column the ORM leaves out unless asked (relay.db.models);
            # one no key decrypts raises SecretUnreadable here: this district's error
            district = await session.get(District, self.district_id, options=[WITH_TOKEN])
        if district is None or district.lease_owner != self.app.worker_id:
            raise LeaseLost(f"district {self.district_id}: lease or district gone")
        if district.status not in leases.POLLABLE:
            raise LeaseLost(f"district {self.district_id}: status is {district.status}")
        # a poller that released the lease for a long backoff is replaced by a new one: the
        # failures in a row go on counting from the row (the backoff grows, and a sync that
        # keeps failing ends failed) rather than from zero each time
        self.failures = max(self.failures, district.consecutive_failures)
        self.keep(district)
        return district

    def keep(self, district: District | None) -> None:
        """Work from ``district`` from now on (None: read it again before the next poll)."""
        self.district = district
        if district is not None:
            self.lease.seen_updated_at = district.updated_at

    async def catch_up(self) -> None:
        district = await self.synced(await self.load())
        self.token_in_use = district.token
        if district.cursor is None and district.start_from == "latest" and not district.seeded:
            await self.seed(district)
            district = await self.load()
        while not self.stop.is_set():
            district = await self.synced(district)
            limit = self.page_size or self.app.settings.clever_page_size
            page = await self.fetch(district, limit)
            now = utcnow()
            gap = detect_gap(district, page, now, self.app.settings.clever_retention)
            if not page.events and gap is None and quiet(district):
                self.note_quiet_poll(district, now)
                self.ingested.burst_ended(self.log_extra)
                return
            caught_up = len(page.events) < limit
            result = await self.store(district, page, caught_up, gap)
            self.keep(result.district)
            counters.EVENTS_INGESTED.inc(result.stored)
            if gap:
                logger.warning("gap detected", extra=self.log_extra | {"detail": gap})
            if page.events:
                logger.debug(
                    "page stored",
                    extra=self.log_extra
                    | {
                        "stored": result.stored,
                        "deliveries": len(result.due),
                        "cursor": page.last_id,
                        "clever_request_id": page.request_id,
                    },
                )
                self.ingested.add(result.stored, len(result.due), page.last_id)
            await self.app.queue.enqueue(result.due)
            if caught_up and result.district.status != DistrictStatus.SYNCING:
                self.ingested.burst_ended(self.log_extra)
                return
            district = await self.load()

    async def synced(self, district: District) -> District:
        """The district after its sync, if one runs or is due (``RELAY_RESYNC_EVERY``);
        as it is otherwise. The sync runs here, under this poller's lease."""
        if district.status != DistrictStatus.SYNCING:
            if not self.resync_due(district):
                return district
            async with self.app.db.write() as session:
                now = utcnow()
                active = col(District.status) == DistrictStatus.ACTIVE
                if await self._update(
                    session, active, status=DistrictStatus.SYNCING, updated_at=now
                ):
                    conn = await session.connection()
                    sync_id = await syncs.begin(conn, self.district_id, syncs.SCHEDULED, now)
                    await self._update(session, sync_id=sync_id)
            self.keep(None)
            district = await self.load()
            if district.status != DistrictStatus.SYNCING:
                return district
        settings = self.app.settings
        context = roster_sync.SyncContext(
            db=self.app.db,
            clever=self.app.clever,
            queue=self.app.queue,
            worker_id=self.app.worker_id,
            lease_seconds=self.lease_seconds,
            page_size=settings.sync_page_size,
        )
        self.token_in_use = district.token
        self.keep(None)  # the sync changes the row
        self.syncing = True  # until it ends: a failure meanwhile is the sync's
        await roster_sync.DistrictSync(context, district).run()
        self.syncing = False
        self.failures = 0
        return await self.load()

    def resync_due(self, district: District) -> bool:
        """``RELAY_RESYNC_EVERY`` has passed since the district's last sync (or it has
        never had one) and it is active and caught up."""
        every = self.app.settings.resync_every
        if every is None or district.status != DistrictStatus.ACTIVE or not district.caught_up:
            return False
        last = district.synced_at
        return last is None or (utcnow() - last).total_seconds() >= every

    def note_quiet_poll(self, district: District, now: datetime) -> None:
        """An empty page that changes nothing but the poll's time: kept in memory (the gap
        rule reads ``caught_up_at``) and written by the keeper's next renewal, not now."""
        district.last_polled_at = district.caught_up_at = now
        self.lease.polled_at = now

    async def store(
        self, district: District, page: EventsPage, caught_up: bool, gap: str | None
    ) -> PageResult:
        """Store the page; a page the database refuses (a value it cannot hold) is an error
        of the district's, naming the events, rather than a crash that would retry unseen."""
        self.keep(None)  # whatever happens, what we hold may be out of date after this
        started = time.monotonic()
        try:
            result = await store_page(
                self.app.db,
                district_id=self.district_id,
                lease_owner=self.app.worker_id,
                expected_cursor=district.cursor,
                events=page.events,
                caught_up=caught_up,
                lease_seconds=self.lease_seconds,
                gap=gap,
                resync_on_gap=self.app.settings.resync_on_gap,
            )
            # the page's transaction extended the lease too
            self.lease.expires = max(self.lease.expires, started + self.lease_seconds)
            return result
        except DBAPIError as exc:
            if not refused(exc):
                raise  # the database is away, not refusing: the poller restarts
            ids = [e.id for e in page.events]
            where = f"events {ids[0]}..{ids[-1]}" if ids else "an empty page"
            raise CleverBadBody(
                f"the page after {district.cursor} ({where}) could not be stored: the "
                f"database refused it ({type(exc.orig).__name__}); see the README, "
                "'A district in error'",
                request_id=page.request_id,
            ) from None

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
            await self._update(
                session,
                col(District.cursor).is_(None),
                cursor=latest,
                seeded=True,
                caught_up_at=utcnow(),
                updated_at=utcnow(),
            )
        self.keep(None)
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
            if not await self._update(
                session, token=fresh, token_source="discovered", updated_at=utcnow()
            ):
                raise LeaseLost(f"district {self.district_id}: lease lost during token refresh")
        self.keep(None)
        logger.info("district token refreshed after a 401", extra=self.log_extra)
        return True

    async def mark_unauthorized(self, error: str) -> None:
        await self.app.queue.enqueue(
            await roster_sync.fail(
                self.app.db,
                self.district_id,
                self.app.worker_id,
                error,
                to=DistrictStatus.UNAUTHORIZED,
            )
        )
        async with self.app.db.write() as session:
            changed = await self._update(
                session,
                status=DistrictStatus.UNAUTHORIZED,
                last_error=error,
                lease_owner=None,
                lease_until=None,
                updated_at=utcnow(),
            )
            jobs = await self._tell(session, operational.DISTRICT_UNAUTHORIZED) if changed else []
        await self.app.queue.enqueue(jobs)
        logger.warning("district unauthorized", extra=self.log_extra | {"error": error})

    async def note_error(
        self, error: str, *, count_failure: bool = False, error_now: bool = False
    ) -> bool:
        """Record ``error`` on the district; with ``count_failure``, one more failure, and
        status ``error`` once they are ``error_after_failures`` in a row (at once with
        ``error_now``: a failure that retrying cannot end). True if the status became
        ``error`` now (its ``relay.district.error`` is raised)."""
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
        jobs: list[Job] = []
        became_error = False
        self.keep(None)
        async with self.app.db.write() as session:
            await self._update(session, **values)
            if count_failure and (
                error_now or self.failures >= self.app.tuning.error_after_failures
            ):
                active = col(District.status) == DistrictStatus.ACTIVE
                became_error = await self._update(session, active, status=DistrictStatus.ERROR)
                if became_error:
                    jobs = await self._tell(session, operational.DISTRICT_ERROR)
        await self.app.queue.enqueue(jobs)
        return became_error

    async def _tell(self, session: AsyncSession, event_type: str) -> list[Job]:
        """Raise ``event_type`` about the district as it now is, in ``session``'s transaction
        (the one that changed its status)."""
        district = await session.get(District, self.district_id, populate_existing=True)
        if district is None:
            return []
        now = utcnow()
        sync = await session.get(Sync, district.sync_id) if district.sync_id else None
        notice = operational.district_notice(event_type, district, now, sync)
        return await operational.raise_notices(await session.connection(), [notice], now)

    async def _update(self, session: AsyncSession, *conditions: Any, **values: Any) -> bool:
        return await update_leased(
            session, self.district_id, self.app.worker_id, *conditions, **values
        )
