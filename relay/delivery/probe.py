"""``relay.test`` events: a signed delivery sent on demand so a team can check its endpoint
(and its signature verification) before real events arrive.

Each test is recorded like any delivery, so it shows in the delivery log and the event log:
an ``events`` row (``owner`` set, no district, as operational events), a delivery that has
already ended (``succeeded`` or ``failed``) and its one attempt with ``trigger = "test"``.
It is never scheduled again, retried or recovered: a new test is a new send.
"""

from __future__ import annotations

import json
from datetime import datetime

from relay.db import Database
from relay.db.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Event,
    EventSource,
    Subscription,
)
from relay.delivery.sender import AttemptOutcome, WebhookSender
from relay.delivery.signing import webhook_headers
from relay.fanout.operational import new_event_id

TEST_EVENT_TYPE = "relay.test"
TEST_TRIGGER = "test"


def test_body(event_id: str, subscription_id: str, now: datetime) -> bytes:
    event = {
        "id": event_id,
        "type": TEST_EVENT_TYPE,
        "created": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "data": {
            "object": {
                "id": subscription_id,
                "message": "A test delivery from Clever Events Relay.",
            }
        },
        "district": None,
    }
    return json.dumps(event, separators=(",", ":")).encode()


async def send_test(
    sender: WebhookSender, url: str, secrets: list[str], subscription_id: str, now: datetime
) -> tuple[str, bytes, AttemptOutcome]:
    event_id = new_event_id(now)
    body = test_body(event_id, subscription_id, now)
    outcome = await sender.send(url, webhook_headers(secrets, event_id, body), body)
    return event_id, body, outcome


async def record_test(
    db: Database, sub: Subscription, event_id: str, body: bytes, outcome: AttemptOutcome
) -> int:
    """Store a sent test as an event, an ended delivery and its attempt; return the
    delivery's id. One transaction: the log shows the whole test or none of it."""
    status = DeliveryStatus.SUCCEEDED if outcome.succeeded else DeliveryStatus.FAILED
    async with db.write() as session:
        session.add(
            Event(
                id=event_id,
                owner=sub.owner,
                source=EventSource.RELAY,
                type=TEST_EVENT_TYPE,
                record_id=sub.id,
                created=outcome.attempted_at,
                body=body.decode(),
            )
        )
        delivery = Delivery(
            subscription_id=sub.id,
            event_id=event_id,
            event_type=TEST_EVENT_TYPE,
            status=status,
            attempts=1,
            manual_attempts=1,
            last_status_code=outcome.status_code,
            created_at=outcome.attempted_at,
            updated_at=outcome.attempted_at,
        )
        session.add(delivery)
        await session.flush()
        assert delivery.id is not None
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                attempted_at=outcome.attempted_at,
                status_code=outcome.status_code,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                response_excerpt=outcome.response_excerpt,
                trigger=TEST_TRIGGER,
            )
        )
        return delivery.id
