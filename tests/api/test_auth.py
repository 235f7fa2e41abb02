from __future__ import annotations

import httpx
import pytest

from relay.api.app import create_app
from tests.support.api import service_client

V1_ROUTES = [
    ("GET", "/v1/districts"),
    ("POST", "/v1/districts"),
    ("GET", "/v1/districts/d1"),
    ("PATCH", "/v1/districts/d1"),
    ("DELETE", "/v1/districts/d1"),
    ("POST", "/v1/districts/d1/resync"),
    ("GET", "/v1/records"),
    ("GET", "/v1/records/u1"),
    ("GET", "/v1/subscriptions"),
    ("POST", "/v1/subscriptions"),
    ("GET", "/v1/subscriptions/sub_x"),
    ("PATCH", "/v1/subscriptions/sub_x"),
    ("DELETE", "/v1/subscriptions/sub_x"),
    ("POST", "/v1/subscriptions/sub_x/rotate-secret"),
    ("POST", "/v1/tokens"),
    ("DELETE", "/v1/tokens/someone"),
    ("POST", "/v1/subscriptions/sub_x/test"),
    ("GET", "/v1/deliveries"),
    ("GET", "/v1/deliveries/7"),
    ("POST", "/v1/deliveries/7/retry"),
    ("POST", "/v1/subscriptions/sub_x/recover"),
    ("POST", "/v1/subscriptions/sub_x/replay"),
    ("POST", "/v1/subscriptions/sub_x/bootstrap"),
    ("GET", "/v1/subscriptions/sub_x/stats"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/0123456789abcdef01234567"),
    ("GET", "/v1/no-such-route"),
]

PATH_PARAMETERS = {
    "/d1": "/{district_id}",
    "/sub_x": "/{subscription_id}",
    "/someone": "/{owner}",
    "/deliveries/7": "/deliveries/{delivery_id}",
    "/0123456789abcdef01234567": "/{event_id}",
    "/records/u1": "/records/{record_id}",
}


def test_every_documented_v1_route_is_in_the_auth_table(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json").json()
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/v1")
        for method in item
    }
    tested = {
        (m, p.replace("d1", "{district_id}").replace("sub_x", "{subscription_id}"))
        for m, p in V1_ROUTES
    }
    tested = set()
    for method, path in V1_ROUTES:
        for concrete, template in PATH_PARAMETERS.items():
            path = path.replace(concrete, template)
        tested.add((method, path))
    assert documented <= tested, documented - tested


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic abc", "Bearer rst_forged.signature"]
)
def test_v1_needs_a_valid_token(
    anonymous: httpx.Client, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = anonymous.request(method, path, headers=headers, content=b"{not json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_auth_comes_before_body_size(anonymous: httpx.Client) -> None:
    response = anonymous.post("/v1/subscriptions", content=b"x" * (2 * 1024 * 1024))
    assert response.status_code == 401


def test_ops_routes_need_no_token(anonymous: httpx.Client) -> None:
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").json()["checks"]["database"] == "ok"
    assert anonymous.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "openapi.json" in anonymous.get("/docs").text


def test_service_token_cannot_use_admin_routes(admin: httpx.Client) -> None:
    with service_client(admin, "svc-a") as svc:
        assert svc.get("/v1/districts").status_code == 403
        assert svc.post("/v1/tokens", json={"owner": "x"}).status_code == 403
        assert svc.delete("/v1/tokens/svc-a").status_code == 403


def test_revoking_an_owner_ends_all_its_tokens(admin: httpx.Client) -> None:
    first = service_client(admin, "svc-a")
    second = service_client(admin, "svc-a")
    assert first.get("/v1/subscriptions").status_code == 200
    assert second.get("/v1/subscriptions").status_code == 200
    assert admin.delete("/v1/tokens/svc-a").status_code == 204
    assert first.get("/v1/subscriptions").status_code == 401
    assert second.get("/v1/subscriptions").status_code == 401
    assert admin.delete("/v1/tokens/svc-a").status_code == 404
    with service_client(admin, "svc-a") as fresh:
        assert fresh.get("/v1/subscriptions").status_code == 200
    assert first.get("/v1/subscriptions").status_code == 401
    first.close()
    second.close()


def test_a_token_signed_with_another_key_is_refused(admin: httpx.Client, settings, runtime) -> None:  # type: ignore[no-untyped-def]
    from relay.api.auth import TokenCodec

    assert admin.post("/v1/tokens", json={"owner": "svc-a"}).status_code == 201
    forged = TokenCodec("another-key").mint("svc-a", 1)
    response = httpx.get(
        f"{admin.base_url}/v1/subscriptions", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert create_app(settings, runtime) is not None


def test_admin_owner_name_is_reserved(admin: httpx.Client) -> None:
    response = admin.post("/v1/tokens", json={"owner": "admin"})
    assert response.status_code == 422


def test_the_schema_excludes_what_the_api_refuses(anonymous: httpx.Client) -> None:
    """What schemathesis found the API refusing although the schema allowed it (#15)."""
    spec = anonymous.get("/openapi.json").json()
    owner = spec["components"]["schemas"]["TokenCreate"]["properties"]["owner"]
    assert owner["not"] == {"const": "admin"}
    token = spec["components"]["schemas"]["DistrictCreate"]["properties"]["token"]
    assert token["pattern"] == "^[!-~]+$"
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for param in op.get("parameters", []):
                schema = param["schema"]
                if schema.get("type") == "string" and "enum" not in schema:
                    assert "pattern" in schema or "format" in schema, (method, path, param)
            if any(p["name"] == "cursor" for p in op.get("parameters", [])):
                assert "404" in op["responses"], (method, path)
