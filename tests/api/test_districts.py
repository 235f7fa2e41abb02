from __future__ import annotations

import httpx
import pytest


def test_district_crud_never_returns_the_token(admin: httpx.Client) -> None:
    created = admin.post(
        "/v1/districts", json={"id": "d1", "token": "clever-secret-token", "name": "One"}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "active"
    assert body["start_from"] == "latest"
    assert body["cursor"] is None
    assert "token" not in body
    for response in (
        admin.get("/v1/districts"),
        admin.get("/v1/districts/d1"),
        admin.patch("/v1/districts/d1", json={"token": "clever-other-token"}),
    ):
        assert response.status_code == 200
        assert "clever-secret-token" not in response.text
        assert "clever-other-token" not in response.text
    assert admin.post("/v1/districts", json={"id": "d1", "token": "t"}).status_code == 409
    paused = admin.patch("/v1/districts/d1", json={"status": "paused"}).json()
    assert paused["status"] == "paused"
    assert admin.patch("/v1/districts/d1", json={"status": "active"}).json()["status"] == "active"
    assert admin.delete("/v1/districts/d1").status_code == 204
    assert admin.get("/v1/districts/d1").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"id": "d1"},
        {"id": "bad id!", "token": "t"},
        {"id": "d1", "token": "t", "start_from": "middle"},
        {"id": "d1", "token": ""},
        {"id": "d1", "token": "t", "extra": 1},
    ],
)
def test_bad_district_input(admin: httpx.Client, body: dict[str, object]) -> None:
    response = admin.post("/v1/districts", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["message"]


def test_patch_rejects_statuses_only_the_relay_sets(admin: httpx.Client) -> None:
    admin.post("/v1/districts", json={"id": "d1", "token": "t"})
    response = admin.patch("/v1/districts/d1", json={"status": "gap_detected"})
    assert response.status_code == 422
