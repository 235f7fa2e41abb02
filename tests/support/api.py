"""Clients of the API under test."""

from __future__ import annotations

import httpx


def service_client(admin: httpx.Client, owner: str) -> httpx.Client:
    response = admin.post("/v1/tokens", json={"owner": owner})
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    return httpx.Client(
        base_url=str(admin.base_url), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
