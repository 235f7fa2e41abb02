from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from relay.db import Database
from tests.support.api import service_client
from tests.support.log_rows import T0, add_delivery, add_event
from tests.support.log_rows import add_owned_subscription as add_subscription


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()["data"]]


async def test_list_and_every_filter(db: Database, admin: httpx.Client) -> None:
    e1 = await add_event(db, district="d1", type="users.created", record_id="u1", created=T0)
    e2 = await add_event(
        db, district="d2", type="users.updated", record_id="u1", created=T0 + timedelta(hours=1)
    )
    e3 = await add_event(
        db, district="d1", type="sections.deleted", record_id="s9", created=T0 + timedelta(days=1)
    )
    body = admin.get("/v1/events").json()
    assert [e["id"] for e in body["data"]] == [e3, e2, e1]
    assert body["data"][2] == {
        "id": e1,
        "district": "d1",
        "owner": None,
        "type": "users.created",
        "record_id": "u1",
        "source": "clever",
        "created": "2024-05-01T12:00:00Z",
        "received_at": body["data"][2]["received_at"],
    }

    def get(**params: str) -> list[str]:
        return ids(admin.get("/v1/events", params=params))

    assert get(district="d1") == [e3, e1]
    assert get(type="users.updated") == [e2]
    assert get(record_id="u1") == [e2, e1]
    assert get(district="d1", record_id="u1") == [e1]
    assert get(since="2024-05-01T13:00:00Z") == [e3, e2]
    assert get(until="2024-05-01T13:00:00") == [e1]  # naive: UTC
    assert get(since="2024-05-01T14:00:00+01:00", until="2024-05-02") == [e2]
    assert get(district="nowhere") == []


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("type=users", "type: expected <record_type>.<action>"),
        ("district=d%201", "district: not a valid id: 'd 1'"),
        ("record_id=" + "r" * 65, "record_id"),
        ("since=soon", "since: not an ISO 8601 timestamp: 'soon'"),
        ("until=2024-02-30", "until"),
        ("limit=x", "limit"),
    ],
)
def test_bad_filters_are_422(admin: httpx.Client, query: str, needle: str) -> None:
    response = admin.get(f"/v1/events?{query}")
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]


async def test_pagination_is_stable_while_events_arrive(db: Database, admin: httpx.Client) -> None:
    original = [await add_event(db, created=T0 + timedelta(seconds=i)) for i in range(12)]
    seen: list[str] = []
    page = admin.get("/v1/events", params={"limit": 5}).json()
    while True:
        seen += [e["id"] for e in page["data"]]
        await add_event(db, created=T0 + timedelta(days=1))
        if page["next_cursor"] is None:
            break
        page = admin.get("/v1/events", params={"limit": 5, "cursor": page["next_cursor"]}).json()
    assert seen == sorted(original, reverse=True)
    sub = await add_subscription(db, "admin")
    await add_delivery(db, sub, original[0])
    await add_delivery(db, sub, original[1])
    deliveries_cursor = admin.get("/v1/deliveries", params={"limit": 1}).json()["next_cursor"]
    for cursor in (deliveries_cursor, "forged"):
        assert admin.get("/v1/events", params={"cursor": cursor}).status_code == 404


async def test_detail_shows_body_and_deliveries(db: Database, admin: httpx.Client) -> None:
    sub = await add_subscription(db, "admin")
    event = await add_event(db, district="d7", type="schools.updated", record_id="sch1")
    first = await add_delivery(db, sub, event, status="failed", event_type="schools.updated")
    other = await add_subscription(db, "admin")
    second = await add_delivery(db, other, event, event_type="schools.updated")
    body = admin.get(f"/v1/events/{event}").json()
    assert (body["id"], body["district"], body["type"]) == (event, "d7", "schools.updated")
    assert body["body"]["district"] == "d7"
    assert body["body"]["data"] == {"object": {"id": "sch1"}}
    assert [d["id"] for d in body["deliveries"]] == [first, second]
    assert body["deliveries"][0]["status"] == "failed"
    assert body["deliveries"][0]["attempts"] == 1
    undelivered = await add_event(db)
    assert admin.get(f"/v1/events/{undelivered}").json()["deliveries"] == []
    for missing in ["000000000000000000000000", "x" * 200, "a b"]:
        response = admin.get(f"/v1/events/{missing}")
        assert response.status_code == 404, response.text


async def test_owner_scoping(db: Database, admin: httpx.Client, anonymous: httpx.Client) -> None:
    with service_client(admin, "team-a") as a, service_client(admin, "team-b") as b:
        sub_a, sub_b = await add_subscription(db, "team-a"), await add_subscription(db, "team-b")
        shared = await add_event(db, created=T0)
        only_b = await add_event(db, created=T0 + timedelta(seconds=1))
        nobody = await add_event(db, created=T0 + timedelta(seconds=2))
        da = await add_delivery(db, sub_a, shared)
        db_shared = await add_delivery(db, sub_b, shared)
        await add_delivery(db, sub_b, only_b)

        assert ids(a.get("/v1/events")) == [shared]
        assert ids(b.get("/v1/events")) == [only_b, shared]
        assert ids(b.get("/v1/events", params={"limit": 1, "type": "users.updated"})) == [only_b]
        assert ids(admin.get("/v1/events")) == [nobody, only_b, shared]
        assert [d["id"] for d in a.get(f"/v1/events/{shared}").json()["deliveries"]] == [da]
        assert [d["id"] for d in b.get(f"/v1/events/{shared}").json()["deliveries"]] == [db_shared]
        for client, hidden in [(a, only_b), (a, nobody), (b, nobody)]:
            response = client.get(f"/v1/events/{hidden}")
            assert response.status_code == 404
            assert response.json()["error"]["message"] == f"no event '{hidden}'"
        assert admin.get(f"/v1/events/{nobody}").status_code == 200
        assert anonymous.get("/v1/events").status_code == 401
        assert anonymous.get(f"/v1/events/{shared}").status_code == 401


def test_openapi_entries(anonymous: httpx.Client) -> None:
    spec = anonymous.get("/openapi.json").json()
    listing = spec["paths"]["/v1/events"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {
        "district",
        "type",
        "record_id",
        "source",
        "since",
        "until",
        "limit",
        "cursor",
    }
    detail = spec["paths"]["/v1/events/{event_id}"]["get"]
    assert detail["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventDetail"
    }
    props = spec["components"]["schemas"]["EventDetail"]["properties"]
    assert props["deliveries"]["items"] == {"$ref": "#/components/schemas/Delivery"}
