from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from relay.db import Database
from relay.db.models import DeliveryAttempt, Subscription
from tests.support.api import service_client
from tests.support.log_rows import T0, add_delivery
from tests.support.log_rows import add_owned_subscription as add_subscription


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["data"]]


async def test_list_items_newest_first(db: Database, admin: httpx.Client) -> None:
    sub = await add_subscription(db, "admin")
    first = await add_delivery(db, sub, status="failed", attempts=8, last_status_code=500)
    later = T0 + timedelta(minutes=1)
    second = await add_delivery(
        db, sub, status="retrying", last_status_code=None, next_attempt_at=later
    )
    body = admin.get("/v1/deliveries").json()
    assert [d["id"] for d in body["data"]] == [second, first]
    assert body["next_cursor"] is None
    item = body["data"][1]
    assert set(item) == {
        "id",
        "subscription_id",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "waiting_for",
        "last_status_code",
    }
    assert item["subscription_id"] == sub
    assert (item["status"], item["attempts"], item["last_status_code"]) == ("failed", 8, 500)
    assert item["created_at"].startswith("2024-05-01T12:00:00")
    assert body["data"][0]["next_attempt_at"].startswith("2024-05-01T12:01:00")


async def test_every_filter(db: Database, admin: httpx.Client) -> None:
    a, b = await add_subscription(db, "admin"), await add_subscription(db, "admin")
    a_failed = await add_delivery(db, a, status="failed", created_at=T0)
    a_ok = await add_delivery(db, a, event_type="sections.created", created_at=T0 + timedelta(1))
    b_failed = await add_delivery(db, b, status="failed", created_at=T0 + timedelta(2))
    b_pending = await add_delivery(db, b, status="pending", created_at=T0 + timedelta(3))

    def get(**params: str) -> list[int]:
        return ids(admin.get("/v1/deliveries", params=params))

    assert get(subscription_id=a) == [a_ok, a_failed]
    assert get(status="failed") == [b_failed, a_failed]
    assert get(status="failed,pending") == [b_pending, b_failed, a_failed]
    assert get(subscription_id=b, status="failed") == [b_failed]
    assert get(event_type="sections.created") == [a_ok]
    assert get(event_type="users.deleted") == []
    # since inclusive, until exclusive; naive = UTC; a date alone is midnight UTC
    assert get(since="2024-05-02T12:00:00Z") == [b_pending, b_failed, a_ok]
    assert get(until="2024-05-02T12:00:00Z") == [a_failed]
    assert get(since="2024-05-02T12:00:00", until="2024-05-03T12:00:01") == [b_failed, a_ok]
    assert get(since="2024-05-02T14:00:00+02:00", until="2024-05-03") == [a_ok]
    assert get(since="2024-05-04") == [b_pending]
    # an unencoded "+" arrives as a space; it is read as the offset it was meant to be
    raw = admin.get("/v1/deliveries?since=2024-05-02T14:00:00+02:00&until=2024-05-03")
    assert ids(raw) == [a_ok]
    assert get(subscription_id="sub_nope") == []
    # RFC 3339 times beyond Python's UTC range clamp instead of failing
    assert get(since="0001-01-01T00:00:00+14:00") == [b_pending, b_failed, a_ok, a_failed]
    assert get(until="9999-12-31T23:59:59-12:00") == [b_pending, b_failed, a_ok, a_failed]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("status=bogus", "'bogus'"),
        ("status=failed,nope", "'nope'"),
        ("since=yesterday", "since: not an ISO 8601 timestamp: 'yesterday'"),
        ("until=2024-13-01", "until: not an ISO 8601 timestamp: '2024-13-01'"),
        ("event_type=users", "event_type: expected <record_type>.<action>"),
        ("event_type=Users.Updated", "'Users.Updated'"),
        ("subscription_id=a%20b", "subscription_id: not a valid id: 'a b'"),
        ("subscription_id=" + "x" * 65, "subscription_id"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("status=", "status: unknown status ''"),
        ("status=failed,%20pending", "' pending'"),
        ("until=", "until: not an ISO 8601 timestamp: ''"),
        ("event_type=", "event_type"),
        ("subscription_id=", "subscription_id"),
        ("subscription_id=sub_1%0A", "subscription_id"),
    ],
)
def test_bad_filters_are_422_naming_the_value(admin: httpx.Client, query: str, needle: str) -> None:
    response = admin.get(f"/v1/deliveries?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert needle in response.json()["error"]["message"]


def test_a_window_that_ends_before_it_starts_is_an_empty_list(admin: httpx.Client) -> None:
    """As any filter matching nothing: the OpenAPI schema cannot say "since before until",
    so the API does not refuse what the schema allows (schemathesis, #15)."""
    response = admin.get("/v1/deliveries?since=2024-05-02T00:00:00Z&until=2024-05-01T00:00:00Z")
    assert response.status_code == 200
    assert response.json()["data"] == []


def test_foreign_or_forged_cursor_is_404_no_such_page(admin: httpx.Client) -> None:
    admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/a"})
    admin.post("/v1/subscriptions", json={"url": "http://127.0.0.1:9/b"})
    other = admin.get("/v1/subscriptions", params={"limit": 1}).json()["next_cursor"]
    assert other is not None
    for cursor in (other, "forged", other[:-2]):
        response = admin.get("/v1/deliveries", params={"cursor": cursor})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["message"].startswith("cursor: no such page")


async def test_pagination_is_stable_while_rows_arrive(db: Database, admin: httpx.Client) -> None:
    sub = await add_subscription(db, "admin")
    original = [await add_delivery(db, sub, status="failed") for _ in range(25)]
    seen: list[int] = []
    params = {"subscription_id": sub, "status": "failed", "limit": "10"}
    page = admin.get("/v1/deliveries", params=params).json()
    while True:
        seen += [d["id"] for d in page["data"]]
        # new deliveries (and other statuses) keep arriving between pages
        await add_delivery(db, sub, status="failed")
        await add_delivery(db, sub, status="succeeded")
        if page["next_cursor"] is None:
            break
        page = admin.get("/v1/deliveries", params=params | {"cursor": page["next_cursor"]}).json()
    assert seen == sorted(original, reverse=True)  # no skip, no repeat, nothing new mid-walk
    assert len(admin.get("/v1/deliveries", params=params | {"limit": "500"}).json()["data"]) == 28


async def test_detail_lists_attempts_oldest_first(db: Database, admin: httpx.Client) -> None:
    sub = await add_subscription(db, "admin")
    delivery = await add_delivery(db, sub, status="retrying", attempts=2, last_status_code=None)
    async with db.write() as session:
        session.add(
            DeliveryAttempt(
                delivery_id=delivery,
                attempted_at=T0,
                status_code=503,
                duration_ms=12,
                response_excerpt="busy",
            )
        )
        session.add(
            DeliveryAttempt(
                delivery_id=delivery,
                attempted_at=T0 + timedelta(seconds=5),
                duration_ms=15000,
                error="timed out after 15 s",
            )
        )
    body = admin.get(f"/v1/deliveries/{delivery}").json()
    assert body["id"] == delivery
    assert body["status"] == "retrying"
    assert body["event_id"]
    assert body["event_type"] == "users.updated"
    first, second = body["attempts"]
    assert first == {
        "attempted_at": "2024-05-01T12:00:00Z",
        "status_code": 503,
        "duration_ms": 12,
        "error": None,
        "response_excerpt": "busy",
        "trigger": "schedule",
    }
    assert (second["status_code"], second["error"]) == (None, "timed out after 15 s")
    fresh = await add_delivery(db, sub, status="pending", attempts=0)
    assert admin.get(f"/v1/deliveries/{fresh}").json()["attempts"] == []


@pytest.mark.parametrize("raw", ["999999", "abc", "-1", "1.5", "99999999999999999999999"])
def test_unknown_delivery_is_404(admin: httpx.Client, raw: str) -> None:
    response = admin.get(f"/v1/deliveries/{raw}")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


async def test_owner_scoping(db: Database, admin: httpx.Client, anonymous: httpx.Client) -> None:
    with service_client(admin, "team-a") as a, service_client(admin, "team-b") as b:
        sub_a, sub_b = await add_subscription(db, "team-a"), await add_subscription(db, "team-b")
        da = await add_delivery(db, sub_a, status="failed")
        db_ = await add_delivery(db, sub_b, status="failed")
        orphan_sub = await add_subscription(db, "team-a")
        orphan = await add_delivery(db, orphan_sub)
        async with db.write() as session:  # a deleted subscription: only the admin sees it
            gone = await session.get(Subscription, orphan_sub)
            await session.delete(gone)

        assert ids(a.get("/v1/deliveries")) == [da]
        assert ids(b.get("/v1/deliveries", params={"status": "failed"})) == [db_]
        assert ids(a.get("/v1/deliveries", params={"subscription_id": sub_b})) == []
        assert ids(a.get("/v1/deliveries", params={"subscription_id": sub_a})) == [da]
        assert ids(admin.get("/v1/deliveries")) == [orphan, db_, da]
        assert a.get(f"/v1/deliveries/{da}").status_code == 200
        for client, hidden in [(a, db_), (b, da), (a, orphan)]:
            response = client.get(f"/v1/deliveries/{hidden}")
            assert response.status_code == 404
            assert response.json() == {
                "error": {"code": "not_found", "message": f"no delivery '{hidden}'"}
            }
        assert admin.get(f"/v1/deliveries/{orphan}").status_code == 200
        assert anonymous.get("/v1/deliveries").status_code == 401
        assert anonymous.get(f"/v1/deliveries/{da}").status_code == 401


def test_openapi_describes_both_attempts(anonymous: httpx.Client) -> None:
    spec = anonymous.get("/openapi.json").json()
    listing = spec["paths"]["/v1/deliveries"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert names == {
        "subscription_id",
        "status",
        "event_type",
        "since",
        "until",
        "limit",
        "cursor",
    }
    assert {"200", "400", "401", "422"} <= set(listing["responses"])
    assert "404" in spec["paths"]["/v1/deliveries/{delivery_id}"]["get"]["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["Delivery"]["properties"]["attempts"]["type"] == "integer"
    detail_attempts = schemas["DeliveryDetail"]["properties"]["attempts"]
    assert detail_attempts["type"] == "array"
    assert set(schemas["DeliveryAttempt"]["required"]) == {
        "attempted_at",
        "status_code",
        "duration_ms",
        "error",
        "response_excerpt",
        "trigger",
    }
