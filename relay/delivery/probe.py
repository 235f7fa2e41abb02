"""``relay.test`` events: a signed delivery sent on demand so a team can check its endpoint
(and its signature verification) before real events arrive."""

from __future__ import annotations

import json
from datetime import datetime

from relay.delivery.sender import AttemptOutcome, WebhookSender
from relay.delivery.signing import webhook_headers
from relay.fanout.operational import new_event_id

TEST_EVENT_TYPE = "relay.test"


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
    event_id = new_event_id(now)
    body = test_body(event_id, subscription_id, now)
    outcome = await sender.send(url, webhook_headers(secrets, event_id, body), body)
    return event_id, outcome
