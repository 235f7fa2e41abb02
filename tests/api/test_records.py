"""The roster API (``GET /v1/records``) and the sync routes on districts: registration with
``start_from: "sync"``, ``POST .../resync`` (409 while one runs), and ``?source=`` on events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx

from relay.clever.events import CleverEvent
from relay.db import Database
from relay.db.models import District
from relay.polling.store import store_page

T0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())


def _event(n: int, type_: str, obj: dict[str, object]) -> CleverEvent:
    event_id = f"{T0 + n:08x}{n:016x}"
    raw = {"id": event_id, "type": type_, "created": "x", "data": {"object": obj}}
    return CleverEvent(event_id, type_, datetime.fromtimestamp(T0 + n, UTC), raw)


async def _roster(db: Database) -> list[CleverEvent]:
    async with db.write() as session:
        session.add(District(id="d1", token="t", lease_owner="A"))
    events = [
        _event(1, "schools.created", {"id": "s1", "name": "North"}),
        _event(2, "users.created", {"id": "u1", "roles": {"student": {"school": "s1"}}}),
        _event(3, "users.created", {"id": "u2", "roles": {"teacher": {"school": "s2"}}}),
        _event(4, "users.created", {"id": "u3", "roles": {"student": {"school": "s2"}}}),
        _event(5, "sections.created", {"id": "c1", "school": "s1"}),
        _event(6, "users.deleted", {"id": "u3", "roles": {"student": {"school": "s2"}}}),
    ]
    await store_page(
        db,
        district_id="d1",
        lease_owner="A",
        expected_cursor=None,
        events=events,
        caught_up=True,
        lease_seconds=5,
    )
    return events


async def test_the_roster_is_listed_filtered_paged_and_shown(
    db: Database, admin: httpx.Client, anonymous: httpx.Client
) -> None:
    events = await _roster(db)
    listed = admin.get("/v1/records").json()
    assert [(r["type"], r["id"]) for r in listed["data"]] == [
        ("schools", "s1"),
        ("sections", "c1"),
        ("users", "u1"),
        ("users", "u2"),
    ]
    assert listed["data"][2] == {
        "id": "u1",
        "type": "users",
        "district": "d1",
        "object": {"id": "u1", "roles": {"student": {"school": "s1"}}},
        "event_id": events[1].id,
        "updated_at": listed["data"][2]["updated_at"],
    }

    def ids(**params: str) -> list[str]:
        response = admin.get("/v1/records", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["data"]]

    assert ids(school="s1") == ["s1", "c1", "u1"]
    assert ids(role="teacher") == ["u2"]
    assert ids(type="users", school="s2") == ["u2"]
    assert ids(district="nowhere") == []
    first = admin.get("/v1/records", params={"limit": 3}).json()
    rest = admin.get("/v1/records", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [r["id"] for r in first["data"] + rest["data"]] == ["s1", "c1", "u1", "u2"]
    assert rest["next_cursor"] is None

    shown = admin.get("/v1/records/u2")
    assert shown.status_code == 200
    assert shown.json()["object"]["roles"] == {"teacher": {"school": "s2"}}
    gone = admin.get("/v1/records/u3")
    assert gone.status_code == 404
    assert "u3" in gone.json()["error"]["message"]
    for bad in ({"type": "people"}, {"role": "principal"}, {"school": "a b"}):
        refused = admin.get("/v1/records", params=bad)
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["message"].startswith(next(iter(bad)))
    assert anonymous.get("/v1/records").status_code == 401
    token = admin.post("/v1/tokens", json={"owner": "gradebook"}).json()["token"]
    service = {"Authorization": f"Bearer {token}"}
    seen = httpx.get(f"{admin.base_url}/v1/records/u1", headers=service)
    assert seen.status_code == 200  # any valid token reads the roster


def test_a_district_registered_to_sync_shows_its_running_sync(admin: httpx.Client) -> None:
    created = admin.post(
        "/v1/districts", json={"id": "d2", "token": "t", "start_from": "sync"}
    ).json()
    assert created["status"] == "syncing"
    sync = created["sync"]
    assert sync["state"] == "running"
    assert sync["reason"] == "initial"
    assert (sync["records_read"], sync["created"], sync["updated"], sync["deleted"]) == (0, 0, 0, 0)
    assert admin.get("/v1/districts/d2").json()["sync"] == sync
    assert admin.get("/v1/districts").json()["data"][0]["sync"] == sync
    busy = admin.post("/v1/districts/d2/resync")
    assert busy.status_code == 409
    assert "already syncing" in busy.json()["error"]["message"]
    # paused mid-sync, then resumed: the sync goes on
    assert admin.patch("/v1/districts/d2", json={"status": "paused"}).json()["status"] == "paused"
    assert admin.patch("/v1/districts/d2", json={"status": "active"}).json()["status"] == "syncing"


async def test_resync_starts_a_requested_sync(db: Database, admin: httpx.Client) -> None:
    admin.post("/v1/districts", json={"id": "d3", "token": "t"})
    assert admin.get("/v1/districts/d3").json()["sync"] is None
    started = admin.post("/v1/districts/d3/resync", json={"emit_created": False})
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "syncing"
    assert body["sync"]["reason"] == "requested"
    assert admin.post("/v1/districts/nowhere/resync").status_code == 404
    bad = admin.post("/v1/districts/d3/resync", json={"emit_created": [1]})
    assert bad.status_code == 422
    admin.post("/v1/districts", json={"id": "d4", "token": "t"})
    admin.patch("/v1/districts/d4", json={"status": "paused"})
    paused = admin.post("/v1/districts/d4/resync")
    assert paused.status_code == 409
    assert "paused" in paused.json()["error"]["message"]


async def test_events_say_their_source(db: Database, admin: httpx.Client) -> None:
    await _roster(db)
    listed = admin.get("/v1/events", params={"source": "clever"}).json()["data"]
    assert len(listed) == 6
    assert {e["source"] for e in listed} == {"clever"}
    assert admin.get("/v1/events", params={"source": "sync"}).json()["data"] == []
    refused = admin.get("/v1/events", params={"source": "elsewhere"})
    assert refused.status_code == 422
    assert "source" in refused.json()["error"]["message"]
    body = admin.get(f"/v1/events/{listed[0]['id']}").json()["body"]
    assert "source" not in body  # Clever's own events carry no source key
    assert json.dumps(body)


async def test_bootstrap_counts_what_it_will_send_by_the_subscriptions_filters(
    db: Database, admin: httpx.Client
) -> None:
    await _roster(db)  # s1; c1 at s1; u1 student at s1; u2 teacher at s2

    def create(**body: object) -> dict[str, object]:
        made = admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/x"} | body)
        assert made.status_code == 201, made.text
        return dict(made.json())

    everything = create(bootstrap=True)
    assert everything["bootstrap"] == {"requeued": 4}
    assert "bootstrap" not in create()
    at_s1 = create(schools=["s1"], roles=["student"])
    answered = admin.post(f"/v1/subscriptions/{at_s1['id']}/bootstrap")
    assert answered.status_code == 202
    assert answered.json() == {"requeued": 3}  # s1, c1, u1: the teacher at s2 is not
    none = create(actions=["deleted"])
    assert admin.post(f"/v1/subscriptions/{none['id']}/bootstrap").json() == {"requeued": 0}
    assert admin.post("/v1/subscriptions/sub_nope/bootstrap").status_code == 404
