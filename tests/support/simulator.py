"""A running Clever simulator as the tests drive it, and the recorded Clever responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from relay.clever.simulator import Simulator, SimulatorConfig
from tests.support.servers import ServerThread

# shared/ lies beside the repository (as CI lays it), else where the sessions have it
_CANDIDATES = (Path(__file__).resolve().parents[3] / "shared", Path("/work/shared"))
SHARED = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1])


RECORDED = SHARED / "clever-recorded"


OPENAPI = SHARED / "clever-events-api-openapi.yml"


def recorded(name: str) -> dict[str, Any]:
    """A recorded api.clever.com interaction: ``{"request": ..., "response": ...}``."""
    data: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return data


def small_config(**overrides: Any) -> SimulatorConfig:
    base: dict[str, Any] = {
        "seed": 7,
        "districts": 2,
        "schools_per_district": 3,
        "students_per_school": 10,
        "teachers_per_school": 2,
        "sections_per_school": 2,
    }
    base.update(overrides)
    return SimulatorConfig(**base)


class Sim:
    """A running simulator: its state, base URL, and helpers for the API and control API."""

    def __init__(self, sim: Simulator, server: ServerThread) -> None:
        self.sim = sim
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=30)
        state = self.http.get("/_sim/state").json()
        self.districts = state["districts"]
        self.district: str = self.districts[0]["id"]
        self.token: str = self.districts[0]["token"]

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def events(self, query: str = "", token: str | None = None) -> httpx.Response:
        return self.http.get(f"/v3.1/events{query}", headers=self.auth(token))

    def generate(self, n: int, district: str | None = None) -> list[str]:
        r = self.http.post(
            f"/_sim/districts/{district or self.district}/events", json={"generate": n}
        )
        assert r.status_code == 201, r.text
        ids: list[str] = r.json()["ids"]
        return ids

    def script(self, events: list[dict[str, Any]], district: str | None = None) -> list[str]:
        r = self.http.post(f"/_sim/districts/{district or self.district}/events", json=events)
        assert r.status_code == 201, r.text
        ids: list[str] = r.json()["ids"]
        return ids
