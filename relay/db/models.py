"""The relay's tables.

Ids: districts and events keep Clever's ids (so ``id`` means the same thing in the API, the
logs and Clever's dashboard); subscriptions get ``sub_…`` ids; deliveries and attempts are
integers because they are the rows that number in the millions and are paged by id.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import deferred, undefer
from sqlmodel import Field, SQLModel

from relay.clever.events import object_id_time
from relay.db.crypto import Encrypted
from relay.db.engine import utcnow
from relay.db.types import UTCDateTime

BigId = BigInteger().with_variant(Integer(), "sqlite")


def _utc_column(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _secret_column(name: str, *, nullable: bool) -> Column[str]:
    return Column(name, Encrypted, nullable=nullable)


def _without_loading(*columns: Column[str]) -> dict[str, Any]:
    """``__mapper_args__`` that leave encrypted columns out of every ORM load: deferred, and
    raising if read without being asked for (``options(undefer(...))``), instead of loading
    one by one. A row whose secret no configured key decrypts is then read, changed and
    deleted like any other (one such row used to stop every query that touched it: fan-out,
    the API, the delivery load); only the code that needs the secret meets
    ``SecretUnreadable``, and makes it that row's state."""
    return {"properties": {c.name: deferred(c, raiseload=True) for c in columns}}


def new_subscription_id() -> str:
    return "sub_" + secrets.token_hex(12)


class DistrictStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    UNAUTHORIZED = "unauthorized"
    GAP_DETECTED = "gap_detected"
    ERROR = "error"
    #: a sync (``relay.roster.sync``) holds the district: its polling waits until it ends
    SYNCING = "syncing"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventSource(StrEnum):
    CLEVER = "clever"
    SYNC = "sync"
    SNAPSHOT = "snapshot"
    RELAY = "relay"


WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
"""Delivery statuses that still expect an attempt."""
FINAL = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)
"""Delivery statuses that end it (a manual retry may still send it again)."""


_DISTRICT_TOKEN = _secret_column("token", nullable=False)


class District(SQLModel, table=True):
    """A Clever district the relay polls. ``token`` (Clever's; encrypted at rest) is not
    loaded by the ORM unless asked for (``_without_loading``)."""

    __tablename__ = "districts"
    __mapper_args__ = _without_loading(_DISTRICT_TOKEN)

    id: str = Field(primary_key=True, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    token: str = Field(sa_column=_DISTRICT_TOKEN)
    token_source: str = Field(default="manual", max_length=16)
    start_from: str = Field(default="latest", max_length=16)
    status: str = Field(default=DistrictStatus.ACTIVE, max_length=16)
    cursor: str | None = Field(default=None, max_length=24)
    seeded: bool = False
    last_polled_at: datetime | None = _utc_column()
    last_event_at: datetime | None = _utc_column()
    last_error: str | None = Field(default=None, sa_type=Text)
    caught_up: bool = False
    caught_up_at: datetime | None = _utc_column()
    consecutive_failures: int = 0
    poll_after: datetime | None = _utc_column()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _utc_column()
    #: the district's last or running sync (``syncs``), and when one last succeeded
    sync_id: int | None = Field(default=None, sa_type=BigId)
    synced_at: datetime | None = _utc_column()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)

    def lag_seconds(self, now: datetime) -> float | None:
        return lag_seconds(now, self.last_polled_at, self.caught_up, self.cursor)


def lag_seconds(
    now: datetime, last_polled_at: datetime | None, caught_up: bool, cursor: str | None
) -> float | None:
    """How far behind Clever a district is: caught up, the time since the poll that said so;
    behind, the age of the newest stored event (its ObjectId time)."""
    if last_polled_at is None:
        return None
    if caught_up or cursor is None:
        return round(max(0.0, (now - last_polled_at).total_seconds()), 3)
    try:
        newest = object_id_time(cursor)
    except ValueError:
        return None
    return round(max(0.0, (now - newest).total_seconds()), 3)


#: A load option: the district with its token, decrypted (SecretUnreadable if no key reads
#: it); for the poller, the one reader that needs it.
WITH_TOKEN = undefer(sa_inspect(District).attrs["token"].class_attribute)


#: The owner name of the admin token (and of what it creates without naming an owner).
ADMIN_OWNER = "admin"


_SECRET = _secret_column("secret", nullable=False)
_PREVIOUS_SECRET = _secret_column("previous_secret", nullable=True)


class Subscription(SQLModel, table=True):
    """Where matching events are delivered. ``secret`` and ``previous_secret`` (encrypted at
    rest) are not loaded by the ORM unless asked for (``_without_loading``)."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_owner_id", "owner", "id"),)
    __mapper_args__ = _without_loading(_SECRET, _PREVIOUS_SECRET)

    id: str = Field(default_factory=new_subscription_id, primary_key=True, max_length=32)
    owner: str = Field(max_length=100)
    url: str = Field(max_length=2048)
    description: str | None = Field(default=None, max_length=1000)
    record_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    actions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    schools: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    districts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    roles: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    changed: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    secret: str = Field(sa_column=_SECRET)
    previous_secret: str | None = Field(default=None, sa_column=_PREVIOUS_SECRET)
    previous_secret_expires_at: datetime | None = _utc_column()
    enabled: bool = True
    # the events of one record go one at a time, in Clever's order (docs/architecture.md)
    ordered: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    # attempts in flight across all workers, and started per second (None: no throttle)
    max_in_flight: int = Field(default=8, sa_column_kwargs={"server_default": "8"})
    max_per_second: int | None = None
    disabled_reason: str | None = Field(default=None, max_length=500)
    failing_since: datetime | None = _utc_column()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Event(SQLModel, table=True):
    """A Clever event, stored once. ``body`` is the webhook body: the event as received
    plus ``"district"``, serialised once so every attempt signs the same bytes."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_district_id_id", "district_id", "id"),
        Index("ix_events_received_at", "received_at"),
        Index("ix_events_created_id", "created", "id"),  # replay windows
    )

    id: str = Field(primary_key=True, max_length=24)
    # null for the relay's operational events (``relay.*``), which belong to ``owner``
    district_id: str | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=100)
    type: str = Field(max_length=64, index=True)
    record_id: str | None = Field(default=None, max_length=64, index=True)
    created: datetime = Field(sa_type=UTCDateTime, nullable=False)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    body: str = Field(sa_type=Text)
    #: ``clever`` (as received), ``sync`` (a difference a sync found), ``snapshot``
    #: (a bootstrap) or ``relay`` (operational); the hot path leaves it to the default
    source: str = Field(
        default=EventSource.CLEVER, max_length=16, sa_column_kwargs={"server_default": "clever"}
    )


class Delivery(SQLModel, table=True):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_deliveries_subscription_event"),
        Index("ix_deliveries_subscription_status_id", "subscription_id", "status", "id"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_deliveries_event_id", "event_id"),
        Index("ix_deliveries_created_at", "created_at"),
        Index("ix_deliveries_waiting_for", "waiting_for"),
    )

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    subscription_id: str = Field(max_length=32)
    event_id: str = Field(max_length=24)
    event_type: str = Field(max_length=64)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    manual_attempts: int = 0  # retries asked for through the API; not part of the schedule
    manual_retry: bool = False  # the next attempt was asked for through the API
    next_attempt_at: datetime | None = _utc_column()
    # ordered subscriptions: the delivery of this record's previous event that must end
    # first; set means pending with no next attempt, until that one ends
    waiting_for: int | None = Field(default=None, sa_type=BigId)
    last_status_code: int | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class DeliveryAttempt(SQLModel, table=True):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery_id_id", "delivery_id", "id"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    delivery_id: int = Field(sa_type=BigId)
    attempted_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    status_code: int | None = None
    duration_ms: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    response_excerpt: str = Field(default="", sa_type=Text)
    trigger: str = Field(default="schedule", max_length=16)


#: Upper bounds (ms) of the attempt-duration histogram kept per subscription and hour; the
#: last column counts everything slower.
DURATION_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 15000)
DURATION_COLUMNS: tuple[str, ...] = (*(f"le_{b}" for b in DURATION_BOUNDS_MS), "le_inf")


class SubscriptionHour(SQLModel, table=True):
    """A subscription's attempts in one hour, counted as they are recorded (in the record
    transaction), so ``GET /v1/subscriptions/{id}/stats`` reads at most 168 rows for a week
    however many deliveries there were."""

    __tablename__ = "subscription_hours"

    subscription_id: str = Field(primary_key=True, max_length=32)
    hour: datetime = Field(primary_key=True, sa_type=UTCDateTime)
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that failed
    deliveries_failed: int = 0  # deliveries that ended failed (schedule exhausted, 410)
    duration_ms: int = Field(default=0, sa_type=BigInteger)
    le_5: int = 0
    le_10: int = 0
    le_25: int = 0
    le_50: int = 0
    le_100: int = 0
    le_250: int = 0
    le_500: int = 0
    le_1000: int = 0
    le_2500: int = 0
    le_5000: int = 0
    le_15000: int = 0
    le_inf: int = 0
    last_success_at: datetime | None = _utc_column()
    last_failure_at: datetime | None = _utc_column()


class Replay(SQLModel, table=True):
    """A request to send a subscription's matching stored events again (``POST
    /v1/subscriptions/{id}/replay``): written first, then worked through in batches by the
    workers, keyset on (``created``, ``id``) from ``after_created``/``after_id``."""

    __tablename__ = "replays"
    __table_args__ = (Index("ix_replays_done_id", "done", "id"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    subscription_id: str = Field(max_length=32)
    since: datetime = Field(sa_type=UTCDateTime, nullable=False)
    until: datetime = Field(sa_type=UTCDateTime, nullable=False)
    after_created: datetime | None = _utc_column()
    after_id: str | None = Field(default=None, max_length=24)
    matched: int = 0  # the events it will send, counted when it was asked for
    requeued: int = 0  # the events it has handed to the delivery queue so far
    done: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class ServiceOwner(SQLModel, table=True):
    """A service-token owner. Tokens embed ``generation``; revoking bumps it, so every
    token minted before the revocation stops working at once."""

    __tablename__ = "service_owners"

    owner: str = Field(primary_key=True, max_length=100)
    generation: int = 1
    revoked: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


#: How long a /ui session cookie lasts (``relay.api.ui``): an ended session's row is kept as long.
UI_SESSION_SECONDS = 3600


class EndedUiSession(SQLModel, table=True):
    """A /ui session signed out before its cookie expired: the cookie is signed, so without
    this row it would still work until then, on every replica."""

    __tablename__ = "ended_ui_sessions"

    id: str = Field(primary_key=True, max_length=32)
    ended_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class SyncState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Sync(SQLModel, table=True):
    """One full read of a district's Data API, compared with its roster (``relay.roster``).

    Its progress is the row: the events cursor taken before reading, the record type being
    read and the last record id read of it, and whether that type was read whole (its
    deletes are being stored). A worker killed mid-sync leaves it here, and whichever worker
    takes the district's lease next goes on from it."""

    __tablename__ = "syncs"
    __table_args__ = (Index("ix_syncs_district_id_id", "district_id", "id"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    district_id: str = Field(max_length=64)
    state: str = Field(default=SyncState.RUNNING, max_length=16)
    reason: str = Field(max_length=16)  # initial | gap | requested | scheduled
    #: False: a record the roster never held joins it without a ``created`` event
    emit_created: bool = True
    cursor_taken: bool = False
    events_cursor: str | None = Field(default=None, max_length=24)
    record_type: str | None = Field(default=None, max_length=16)
    after: str | None = Field(default=None, max_length=64)
    deleting: bool = False
    records_read: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    failures: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    finished_at: datetime | None = _utc_column()
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)

    def shown(self) -> dict[str, Any]:
        """As the API and operational events show it (the progress fields stay inside)."""
        return {
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "records_read": self.records_read,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "error": self.error,
        }


class Record(SQLModel, table=True):
    """The roster: a district's records as the relay knows them now, each with the event
    (Clever's or a sync's) that last set it. ``schools`` and ``roles`` are the record's, as
    `` a b `` (space-delimited, space-padded) so ``GET /v1/records`` filters with LIKE."""

    __tablename__ = "records"
    __table_args__ = (Index("ix_records_id", "id"),)

    district_id: str = Field(primary_key=True, max_length=64)
    type: str = Field(primary_key=True, max_length=16)
    id: str = Field(primary_key=True, max_length=64)
    object: str = Field(sa_type=Text)
    #: None: the record joined the roster from a sync that was asked not to announce it
    event_id: str | None = Field(default=None, max_length=24)
    schools: str = Field(default="", sa_type=Text)
    roles: str = Field(default="", max_length=200)
    #: the last sync that read this record from Clever (deletes: those this sync did not)
    sync_id: int | None = Field(default=None, sa_type=BigId)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Bootstrap(SQLModel, table=True):
    """A request to send a subscription the roster (``POST /v1/subscriptions/{id}/bootstrap``):
    written first, then worked through in batches by the workers, keyset on the roster's
    (``district_id``, ``type``, ``id``) from ``after_*``."""

    __tablename__ = "bootstraps"
    __table_args__ = (Index("ix_bootstraps_done_id", "done", "id"),)

    id: int | None = Field(default=None, sa_type=BigId, primary_key=True)
    subscription_id: str = Field(max_length=32)
    after_district: str | None = Field(default=None, max_length=64)
    after_type: str | None = Field(default=None, max_length=16)
    after_id: str | None = Field(default=None, max_length=64)
    matched: int = 0  # the records it will send, counted when it was asked for
    requeued: int = 0  # the snapshots it has handed to the delivery queue so far
    done: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
