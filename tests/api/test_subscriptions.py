from __future__ import annotations

import base64

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from relay.api.app import create_app
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.api import service_client
from tests.support.config import ADMIN_TOKEN
from tests.support.servers import serve

URL = "http://127.0.0.1:9999/hooks"


def create(client: httpx.Client, **fields: object) -> httpx.Response:
    return client.post("/v1/subscriptions", json={"url": URL, **fields})


def test_secret_is_shown_once_and_signs(admin: httpx.Client) -> None:
    response = create(admin, record_types=["users"], schools=["s1"])
    assert response.status_code == 201
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    Webhook(secret)  # the official library accepts it
    shown = admin.get(f"/v1/subscriptions/{body['id']}").json()
    assert "secret" not in shown
    assert secret not in admin.get("/v1/subscriptions").text
    assert shown["owner"] == "admin"
    assert shown["record_types"] == ["users"]
    assert shown["schools"] == ["s1"]


def test_ordered_is_off_by_default_set_on_create_and_patch_and_shown(admin: httpx.Client) -> None:
    plain = create(admin).json()
    assert plain["ordered"] is False
    body = create(admin, ordered=True).json()
    assert body["ordered"] is True
    assert admin.get(f"/v1/subscriptions/{body['id']}").json()["ordered"] is True
    patched = admin.patch(f"/v1/subscriptions/{body['id']}", json={"ordered": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["ordered"] is False
    listed = {s["id"]: s["ordered"] for s in admin.get("/v1/subscriptions").json()["data"]}
    assert listed == {plain["id"]: False, body["id"]: False}


def test_roles_and_changed_are_kept_and_patched(admin: httpx.Client) -> None:
    body = create(admin, roles=["teacher", "staff"], changed=["teachers", "name"]).json()
    assert (body["roles"], body["changed"]) == (["staff", "teacher"], ["name", "teachers"])
    patched = admin.patch(f"/v1/subscriptions/{body['id']}", json={"changed": None})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["roles"], patched.json()["changed"]) == (["staff", "teacher"], [])


def test_supplied_secret_is_kept(admin: httpx.Client) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert create(admin, secret=secret).json()["secret"] == secret


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "/relative"}, "url"),
        ({"record_types": ["students"]}, "'students'"),
        ({"actions": ["upserted"]}, "'upserted'"),
        ({"secret": "nope"}, "secret"),
        ({"secret": "whsec_" + base64.b64encode(b"short").decode()}, "secret"),
        ({"colour": "blue"}, "colour: unknown field"),
        ({"enabled": "maybe"}, "enabled"),
        ({"ordered": "yes"}, "ordered"),
        ({"roles": ["principal"]}, "unknown role 'principal'"),
        ({"roles": "teacher"}, "roles"),
        ({"changed": [""]}, "changed: '' is not a dotted field path"),
        ({"changed": ["roles..student"]}, "'roles..student' is not a dotted field path"),
        ({"changed": [7]}, "changed: expected a dotted field path string, got 7"),
    ],
)
def test_bad_input_is_named(admin: httpx.Client, fields: dict[str, object], needle: str) -> None:
    response = admin.post("/v1/subscriptions", json={"url": URL} | fields)
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",
        "http://169.254.169.254./",
        "http://metadata.google.internal/",
    ],
)
def test_a_well_formed_url_the_policy_refuses_is_403(admin: httpx.Client, url: str) -> None:
    """Not bad input (the schema allows it) but a target this relay may not send to."""
    response = admin.post("/v1/subscriptions", json={"url": url})
    assert response.status_code == 403, response.text
    assert response.json()["error"]["message"].startswith("url: ")


def test_malformed_json_is_400(admin: httpx.Client) -> None:
    response = admin.post(
        "/v1/subscriptions", content=b"{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert admin.post("/v1/subscriptions", json=[1]).status_code == 422


def test_body_over_one_mib_is_413(admin: httpx.Client) -> None:
    big = {"url": URL, "description": "x" * (1024 * 1024 + 10)}
    assert admin.post("/v1/subscriptions", json=big).status_code == 413


def test_owner_scoping(admin: httpx.Client) -> None:
    with service_client(admin, "team-a") as a, service_client(admin, "team-b") as b:
        sub_a = create(a).json()
        sub_b = create(b).json()
        assert sub_a["owner"] == "team-a"
        assert [s["id"] for s in a.get("/v1/subscriptions").json()["data"]] == [sub_a["id"]]
        for method, suffix in [
            ("GET", ""),
            ("PATCH", ""),
            ("DELETE", ""),
            ("POST", "/rotate-secret"),
        ]:
            kwargs = {"json": {"description": "x"}} if method == "PATCH" else {}
            response = a.request(method, f"/v1/subscriptions/{sub_b['id']}{suffix}", **kwargs)
            assert response.status_code == 404, (method, suffix)
        assert create(a, owner="team-b").status_code == 403
        assert len(admin.get("/v1/subscriptions").json()["data"]) == 2
        assert (
            admin.get("/v1/subscriptions", params={"owner": "team-b"}).json()["data"][0]["id"]
            == sub_b["id"]
        )


def test_admin_can_create_for_an_owner(admin: httpx.Client) -> None:
    assert create(admin, owner="team-c").json()["owner"] == "team-c"


def test_update_and_delete(admin: httpx.Client) -> None:
    sub = create(admin, schools=["a"]).json()
    patched = admin.patch(
        f"/v1/subscriptions/{sub['id']}",
        json={"schools": ["b", "a", "b"], "enabled": False, "description": "d"},
    )
    assert patched.status_code == 200
    assert patched.json()["schools"] == ["a", "b"]
    assert patched.json()["enabled"] is False
    assert admin.patch(f"/v1/subscriptions/{sub['id']}", json={"url": "nope"}).status_code == 422
    assert admin.delete(f"/v1/subscriptions/{sub['id']}").status_code == 204
    assert admin.get(f"/v1/subscriptions/{sub['id']}").status_code == 404


def test_rotate_secret_returns_a_new_secret(admin: httpx.Client) -> None:
    sub = create(admin).json()
    rotated = admin.post(f"/v1/subscriptions/{sub['id']}/rotate-secret").json()
    assert rotated["secret"] != sub["secret"]
    assert rotated["secret"].startswith("whsec_")


def test_pagination_walks_every_item_once(admin: httpx.Client) -> None:
    ids = {create(admin).json()["id"] for _ in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = admin.get("/v1/subscriptions", params=params).json()
        seen += [s["id"] for s in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert admin.get("/v1/subscriptions", params={"cursor": "forged"}).status_code == 404
    assert admin.get("/v1/subscriptions", params={"limit": 0}).status_code == 422


def test_schema_enums_are_the_matching_contract() -> None:
    from typing import get_args

    from relay.api.schemas import Action, RecordType
    from relay.fanout.matching import ACTIONS, RECORD_TYPES
    from relay.fanout.operational import RECORD_TYPE

    assert set(get_args(RecordType)) == {*RECORD_TYPES, RECORD_TYPE}
    assert set(get_args(Action)) == set(ACTIONS)


def test_delivery_limits_default_set_on_create_and_patch_and_shown(admin: httpx.Client) -> None:
    plain = create(admin).json()
    assert (plain["max_in_flight"], plain["max_per_second"]) == (8, None)
    body = create(admin, max_in_flight=50, max_per_second=20).json()
    assert (body["max_in_flight"], body["max_per_second"]) == (50, 20)
    path = f"/v1/subscriptions/{body['id']}"
    assert admin.patch(path, json={"max_in_flight": 2}).json()["max_per_second"] == 20
    cleared = admin.patch(path, json={"max_per_second": None}).json()  # null: no throttle
    assert (cleared["max_in_flight"], cleared["max_per_second"]) == (2, None)
    assert admin.get(path).json()["max_in_flight"] == 2


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 1001}, "max_in_flight"),
        ({"max_in_flight": "8"}, "max_in_flight"),
        ({"max_per_second": 0}, "max_per_second"),
        ({"max_per_second": 2.5}, "max_per_second"),
    ],
)
def test_bad_delivery_limits_are_422_naming_the_field(
    admin: httpx.Client, fields: dict[str, object], named: str
) -> None:
    response = create(admin, **fields)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(named + ":")


def test_an_owner_beyond_its_subscription_quota_gets_409(
    settings: Settings, runtime: RuntimeSecrets
) -> None:
    small = settings.model_copy(update={"max_subscriptions_per_owner": 2})
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        serve(create_app(small, runtime)) as server,
        httpx.Client(base_url=server.url, headers=headers, timeout=10) as admin,
    ):
        team = service_client(admin, "team")
        other = service_client(admin, "other")
        assert [create(team).status_code for _ in range(2)] == [201, 201]
        refused = create(team)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert "RELAY_MAX_SUBSCRIPTIONS_PER_OWNER=2" in refused.json()["error"]["message"]
        assert create(other).status_code == 201  # the quota is per owner
        first = team.get("/v1/subscriptions").json()["data"][0]["id"]
        assert team.delete(f"/v1/subscriptions/{first}").status_code == 204
        assert create(team).status_code == 201
