"""``relay.test`` events: a signed delivery sent on demand so a team can check its endpoint
(and its signature verification) before real events arrive."""

from __future__ import annotations

import json
import os
from datetime import datetime

from relay.delivery.sender import AttemptOutcome, WebhookSender
from relay.delivery.signing import webhook_headers

TEST_EVENT_TYPE = "relay.test"


def test_event_id(now: datetime) -> str:
    """ObjectId-shaped like Clever's ids (time first), so receivers can treat it the same."""
    return f"{int(now.timestamp()):08x}" + os.urandom(8).hex()


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
) -> tuple[str, AttemptOutcome]:
    event_id = test_event_id(now)
    body = test_body(event_id, subscription_id, now)
    outcome = await sender.send(url, webhook_headers(secrets, event_id, body), body)
    return event_id, outcome
