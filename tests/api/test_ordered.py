"""Ordered subscriptions through the API: what waits is listed, and switching ordering off
releases it."""

from __future__ import annotations

import httpx

from relay.db import Database
from tests.support.chains import World


async def test_switching_ordered_off_releases_what_waits(db: Database, admin: httpx.Client) -> None:
    world = await World(db).create()
    await world.page(["a", "a", "a"])
    response = admin.patch(f"/v1/subscriptions/{world.ordered}", json={"ordered": False})
    assert response.status_code == 200, response.text
    rows = [d for d, _ in await world.deliveries(world.ordered)]
    assert all(d.waiting_for is None and d.next_attempt_at is not None for d in rows)


async def test_a_waiting_delivery_is_listed_pending_with_what_it_waits_for(
    db: Database, admin: httpx.Client
) -> None:
    world = await World(db).create()
    await world.page(["a", "a"])
    listed = admin.get("/v1/deliveries", params={"subscription_id": world.ordered}).json()
    second, first = listed["data"]  # newest first
    assert (first["status"], first["waiting_for"]) == ("pending", None)
    assert first["next_attempt_at"] is not None
    assert (second["status"], second["waiting_for"]) == ("pending", first["id"])
    assert second["next_attempt_at"] is None


async def test_a_manual_retry_is_sent_now_and_the_chain_goes_on_behind_it(
    db: Database, admin: httpx.Client
) -> None:
    world = await World(db).create()
    await world.page(["a", "a", "a"])
    _, (a2, _), _ = await world.deliveries(world.ordered)
    response = admin.post(f"/v1/deliveries/{a2.id}/retry")
    assert response.status_code == 202, response.text
    _, (a2, _), (a3, _) = await world.deliveries(world.ordered)
    assert (a2.status, a2.waiting_for) == ("retrying", None)
    assert a2.next_attempt_at is not None
    assert a3.waiting_for == a2.id  # a3 now waits for a2's attempt, not for a1
