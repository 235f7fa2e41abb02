"""Fixtures: a small simulator served by uvicorn on 127.0.0.1, and an httpx client for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from tests.support.servers import ServerThread, serve

SHARED = Path("/work/shared")
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


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """``make_sim(**config_overrides)`` starts a simulator; all are stopped at teardown."""
    stack: list[tuple[Any, Sim]] = []

    def start(**overrides: Any) -> Sim:
        sim = Simulator(small_config(**overrides))
        ctx = serve(create_app(sim))
        running = Sim(sim, ctx.__enter__())
        stack.append((ctx, running))
        return running

    yield start
    for ctx, running in reversed(stack):
        running.http.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def sim(make_sim: Any) -> Sim:
    running: Sim = make_sim()
    return running
