"""``POST /v1/subscriptions/{id}/replay`` as the API answers it: owner-scoped, bad windows
refused naming the field, the request stored and its events counted."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import select

from relay.db import Database
from relay.db.models import Replay
from tests.support.api import service_client
from tests.support.chains import World

URL = "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("window", "needle"),
    [
        ({}, "since: required"),
        ({"since": "yesterday"}, "since: not an ISO 8601 timestamp"),
        ({"since": "2026-11-01T00:00:00"}, "has no offset"),
        ({"since": 5}, "since: must be an ISO 8601 timestamp"),
        ({"since": "2026-11-01T00:00:00Z", "colour": "blue"}, "colour"),
    ],
)
def test_a_bad_window_is_422_naming_the_field(
    admin: httpx.Client, window: dict[str, object], needle: str
) -> None:
    sub = admin.post("/v1/subscriptions", json={"url": URL}).json()["id"]
    response = admin.post(f"/v1/subscriptions/{sub}/replay", json=window)
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]


@pytest.mark.parametrize("action", ["recover", "replay"])
def test_a_window_that_ends_before_it_starts_requeues_nothing_and_says_why(
    admin: httpx.Client, action: str
) -> None:
    sub = admin.post("/v1/subscriptions", json={"url": URL}).json()["id"]
    window = {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}
    response = admin.post(f"/v1/subscriptions/{sub}/{action}", json=window)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "requeued": 0,
        "note": "the window is empty: until (2026-11-01T00:00:00+00:00) is not after "
        "since (2026-11-02T00:00:00+00:00)",
    }


def test_another_owners_subscription_is_404(admin: httpx.Client) -> None:
    with service_client(admin, "a") as a, service_client(admin, "b") as b:
        sub = a.post("/v1/subscriptions", json={"url": URL}).json()["id"]
        window = {"since": "2026-11-01T00:00:00Z"}
        assert b.post(f"/v1/subscriptions/{sub}/replay", json=window).status_code == 404
        assert a.post(f"/v1/subscriptions/{sub}/replay", json=window).status_code == 202


async def test_the_request_is_stored_with_what_it_will_send(
    db: Database, admin: httpx.Client
) -> None:
    world = await World(db).create()
    await world.page(["a", "b", "c"])
    body = {"url": URL, "record_types": ["users"]}
    sub = admin.post("/v1/subscriptions", json=body).json()["id"]
    window = {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}
    response = admin.post(f"/v1/subscriptions/{sub}/replay", json=window)
    assert (response.status_code, response.json()) == (202, {"requeued": 3})
    async with db.read() as session:
        (replay,) = (await session.exec(select(Replay))).all()
    assert (replay.subscription_id, replay.matched, replay.done) == (sub, 3, False)
