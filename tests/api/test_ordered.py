"""Ordered subscriptions through the API: what waits is listed, and switching ordering off
releases it."""

from __future__ import annotations

import httpx

from relay.db import Database
from tests.support.chains import OUTCOMES, World


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


async def test_a_manual_retry_waits_only_for_the_attempt_in_flight(
    db: Database, admin: httpx.Client
) -> None:
    """a1 is due (its attempt may be in flight): a retry of a3 waits for a1 alone, not for
    a2; once a1 is retrying later instead (nothing in flight), a retry of a2 is sent now."""
    world = await World(db).create()
    await world.page(["a", "a", "a"])
    (a1, _), (a2, _), (a3, _) = await world.deliveries(world.ordered)
    response = admin.post(f"/v1/deliveries/{a3.id}/retry")
    assert response.status_code == 202, response.text
    _, _, (a3, _) = await world.deliveries(world.ordered)
    assert (a3.status, a3.waiting_for, a3.next_attempt_at) == ("retrying", a1.id, None)

    await world.finish(a1, OUTCOMES["retry"])  # a1 now retrying, due in a second or so
    response = admin.post(f"/v1/deliveries/{a2.id}/retry")
    assert response.status_code == 202, response.text
    (a1, _), (a2, _), (a3, _) = await world.deliveries(world.ordered)
    assert (a2.status, a2.waiting_for) == ("retrying", None)
    assert a2.next_attempt_at is not None  # sent now
    assert a3.waiting_for == a1.id
