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


# -- the Data API --------------------------------------------------------------------------

#: the Data API's list routes, in the order a sync reads them
DATA_TYPES = ("districts", "schools", "users", "sections", "courses", "terms", "resources")

#: a district's Data API as read whole: ``(record type, id) -> record``
Snapshot = dict[tuple[str, str], dict[str, Any]]


def data(sim: Sim, path_query: str, token: str | None = None) -> httpx.Response:
    """``GET /v3.1/<path_query>`` (``users?limit=5``, ``schools/<id>``) with a district token."""
    return sim.http.get(f"/v3.1/{path_query}", headers=sim.auth(token))


def read_data_api(sim: Sim, limit: int = 10_000, token: str | None = None) -> Snapshot:
    """Every record of the district, each type paged by its ``next`` links as a sync would,
    checking on the way that items are ascending, wrapped with their ``uri``, and that a page
    has a ``next`` exactly when it is full."""
    out: Snapshot = {}
    for record_type in DATA_TYPES:
        uri: str | None = f"/v3.1/{record_type}?limit={limit}"
        last = ""
        while uri is not None:
            r = sim.http.get(uri, headers=sim.auth(token))
            assert r.status_code == 200, (uri, r.status_code, r.text)
            body = r.json()
            for item in body["data"]:
                record = item["data"]
                assert record["id"] > last, "records come ascending by id"
                last = record["id"]
                assert item["uri"] == f"/v3.1/{record_type}/{record['id']}"
                out[(record_type, record["id"])] = record
            links = {link["rel"]: link["uri"] for link in body["links"]}
            assert ("next" in links) == (len(body["data"]) == limit), (uri, links)
            uri = links.get("next")
    return out


def all_events(sim: Sim, token: str | None = None) -> list[dict[str, Any]]:
    """Every retained event of the district, oldest first (paged by the last id)."""
    events: list[dict[str, Any]] = []
    query = "?limit=10000"
    while True:
        page = sim.events(query, token=token).json()["data"]
        if not page:
            return events
        events += [item["data"] for item in page]
        query = f"?limit=10000&starting_after={events[-1]['id']}"


def apply_events(snapshot: Snapshot, events: list[dict[str, Any]]) -> Snapshot:
    """What a consumer holds after applying ``events`` in order to ``snapshot``
    (``created``/``updated``: the object, by id; ``deleted``: gone)."""
    out = dict(snapshot)
    for event in events:
        record_type, action = event["type"].split(".")
        obj = event["data"]["object"]
        key = (record_type, obj["id"])
        if action == "deleted":
            out.pop(key, None)
        else:
            out[key] = obj
    return out
