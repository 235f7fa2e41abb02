"""Response bodies of the delivery log and the event log (``/v1/deliveries``, ``/v1/events``).

Note the one deliberate name clash of the contract: in a delivery *list* item ``attempts`` is
the number of attempts made; in a delivery *detail* it is the list of those attempts. The two
are separate models (``Delivery`` and ``DeliveryDetail``) so each is described exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

DeliveryStatusName = Literal["pending", "retrying", "succeeded", "failed", "cancelled"]


class _DeliveryFields(BaseModel):
    id: int = Field(description="delivery id (newest deliveries have the highest ids)")
    subscription_id: str
    event_id: str = Field(description="the Clever event id (also the webhook-id header)")
    event_type: str = Field(description="<record_type>.<action>, e.g. users.updated")
    status: DeliveryStatusName
    created_at: datetime
    next_attempt_at: datetime | None = Field(
        description="when the next attempt is due; null once succeeded, failed or cancelled, "
        "while parked (subscription disabled) or while waiting_for is set"
    )
    waiting_for: int | None = Field(
        description="ordered subscriptions: the delivery of the same record's previous event "
        "that must end first; this one stays pending until it has"
    )
    last_status_code: int | None = Field(
        description="HTTP status of the latest attempt; null before any attempt or when the "
        "latest attempt got no response (timeout, refused)"
    )


class Delivery(_DeliveryFields):
    """One delivery of one event to one subscription, as listed."""

    attempts: int = Field(ge=0, description="number of attempts made so far (a count)")


class DeliveryAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None = Field(description="HTTP status; null when there was no response")
    duration_ms: int
    error: str | None = Field(description="why the attempt failed, when it did")
    response_excerpt: str = Field(description="the start of the receiver's response body")
    trigger: Literal["schedule", "manual", "test"] = Field(
        description="what sent it: the retry schedule, a person (retry, recover or replay "
        "through the API, CLI or /ui: counted apart from the schedule), or a relay.test send"
    )


class DeliveryDetail(_DeliveryFields):
    """A delivery with its attempts. Unlike the list, ``attempts`` here is the list itself."""

    attempts: list[DeliveryAttempt] = Field(description="every attempt made, oldest first")


class DeliveryList(BaseModel):
    data: list[Delivery] = Field(description="newest first")
    next_cursor: str | None


class Event(BaseModel):
    id: str = Field(description="the Clever event id (or the relay's own, for relay.* events)")
    district: str | None = Field(
        description="the Clever district id the event came from; null for relay.* events"
    )
    owner: str | None = Field(
        default=None, description="relay.* events: the owner they are for; null for Clever's"
    )
    type: str = Field(description="<record_type>.<action>, or relay.<subject>.<what>")
    record_id: str | None = Field(description="id of the changed record (data.object.id)")
    source: str = Field(
        default="clever",
        description="clever (as received), sync (a difference a sync found), snapshot (a "
        "bootstrap) or relay (operational)",
    )
    created: datetime = Field(description="when Clever created the event")
    received_at: datetime = Field(description="when the relay stored it")


class EventDetail(Event):
    body: dict[str, Any] = Field(
        description="the webhook body: the Clever event exactly as received plus 'district' "
        "(relay.* events: {id, type, created, data: {object}})"
    )
    deliveries: list[Delivery] = Field(
        description="its deliveries, oldest first (a service token sees only its own)"
    )


class EventList(BaseModel):
    data: list[Event] = Field(description="newest first")
    next_cursor: str | None


class RosterRecord(BaseModel):
    id: str = Field(description="the Clever record id")
    type: str = Field(description="the record type: users, sections, schools, ...")
    district: str = Field(description="the Clever district id")
    object: dict[str, Any] = Field(description="the record as Clever last described it")
    event_id: str | None = Field(
        description="the event (Clever's, or a sync's) that last set it; null when a sync "
        "asked not to announce new records added it"
    )
    updated_at: datetime = Field(description="when the relay last changed it")


class RosterRecordList(BaseModel):
    data: list[RosterRecord]
    next_cursor: str | None
