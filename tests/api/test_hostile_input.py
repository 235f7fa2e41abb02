"""Bad input answers 4xx with the error shape, naming what is wrong, never a 500 (and the
connection stays usable): NUL characters anywhere, absurdly nested JSON, times at the edges of
the calendar. These reached PostgreSQL (which refuses NUL in text) or Python's limits before."""

from __future__ import annotations

import json

import httpx
import pytest

from relay.api.app import create_app
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.servers import serve

SUB = {"url": "http://10.0.0.1/hook"}


def _ok_after(admin: httpx.Client, response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"], response.text
    assert admin.get("/v1/subscriptions").status_code == 200  # the connection still serves


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "http://10.0.0.1/ho\u0000ok"}, "url: must not contain a NUL"),
        (SUB | {"description": "a\u0000b"}, "description: must not contain a NUL"),
        (SUB | {"schools": ["s1", "s\u00002"]}, "schools.1: must not contain a NUL"),
        (SUB | {"x\u0000": 1}, "'x\\x00': must not contain a NUL"),
    ],
)
def test_nul_in_a_json_string_is_422_naming_the_field(
    admin: httpx.Client, body: dict[str, object], needle: str
) -> None:
    _ok_after(admin, admin.post("/v1/subscriptions", json=body), 422, needle)


def test_nul_in_a_district_token_is_422(admin: httpx.Client) -> None:
    body = {"id": "d1", "token": "tok\u0000en"}
    _ok_after(admin, admin.post("/v1/districts", json=body), 422, "token: must not contain")


def test_json_nested_100000_deep_is_400(admin: httpx.Client) -> None:
    deep = '{"url": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = admin.post("/v1/subscriptions", content=deep)
    _ok_after(admin, response, 400, "nested too deeply")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/subscriptions/%00"),
        ("GET", "/v1/events/%00"),
        ("GET", "/v1/districts/%00"),
        ("DELETE", "/v1/tokens/%00"),
        ("GET", "/v1/deliveries/%00"),
        ("GET", "/v1/deliveries?subscription_id=%00"),
        ("GET", "/v1/events?record_id=a%00b"),
    ],
)
def test_nul_in_a_path_or_query_is_400(admin: httpx.Client, method: str, path: str) -> None:
    _ok_after(admin, admin.request(method, path), 400, "NUL character")


def test_nul_in_the_url_is_still_401_without_a_token(api_url: str) -> None:
    assert httpx.get(f"{api_url}/v1/subscriptions/%00").status_code == 401


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize("action", ["recover", "replay"])
def test_a_window_at_the_calendars_edge_is_its_first_or_last_instant(
    admin: httpx.Client, since: str, action: str
) -> None:
    """Valid ISO 8601 whose offset takes it past year 1 or 9999 in UTC: clamped, as the list
    filters do, not a 500 (an OverflowError before) nor a refusal of what the schema allows."""
    created = admin.post("/v1/subscriptions", json=SUB).json()
    response = admin.post(
        f"/v1/subscriptions/{created['id']}/{action}", content=json.dumps({"since": since})
    )
    assert response.status_code == 202, response.text
    assert admin.get("/healthz").status_code == 200


def test_loopback_targets_are_refused_outside_relay_run(
    settings: Settings, runtime: RuntimeSecrets
) -> None:
    """Outside ``relay run`` a subscription, or a ``/test``, cannot reach the relay's own
    host (its API, Redis): /test once answered ~350 probes a second with the reply's start."""
    strict = settings.model_copy(update={"allow_loopback": False})
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        serve(create_app(strict, runtime)) as api,
        httpx.Client(base_url=api.url, headers=headers) as admin,
    ):
        for url in ("http://127.0.0.1:6379/", "http://[::1]:8000/v1/tokens"):
            refused = admin.post("/v1/subscriptions", json={"url": url})
            assert refused.status_code == 403, refused.text
            assert "loopback address" in refused.json()["error"]["message"]
        sub = admin.post("/v1/subscriptions", json=SUB).json()
        moved = admin.patch(f"/v1/subscriptions/{sub['id']}", json={"url": "http://127.0.0.1/"})
        assert moved.status_code == 403
