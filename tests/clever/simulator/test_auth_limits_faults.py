"""Auth, token discovery and rotation, the per-token rate limit, and injected faults."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support.simulator import Sim


def test_missing_or_unknown_token_is_401(sim: Sim) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        r = sim.http.get("/v3.1/events", headers=headers)
        assert r.status_code == 401
        assert isinstance(r.json()["message"], str)
        assert "clever-request-id" in r.headers


def test_every_api_response_has_a_request_id(sim: Sim) -> None:
    ids = sim.generate(2)
    seen = set()
    for path in ("/v3.1/events", f"/v3.1/events/{ids[0]}", f"/v3.1/events/{'f' * 24}"):
        r = sim.http.get(path, headers=sim.auth())
        request_id = r.headers["clever-request-id"]
        uuid.UUID(request_id)
        seen.add(request_id)
    assert len(seen) == 3


def test_oauth_tokens_with_basic_auth(sim: Sim) -> None:
    creds = ("sim-client-id", "sim-client-secret")
    r = sim.http.get("/oauth/tokens?owner_type=district", auth=creds)
    assert r.status_code == 200
    assert "clever-request-id" not in r.headers
    assert not any(h.startswith("x-ratelimit") for h in r.headers)
    body = r.json()
    assert body["links"] == [{"rel": "self", "uri": "/oauth/tokens?owner_type=district"}]
    tokens = {t["owner"]["id"]: t["access_token"] for t in body["data"]}
    assert tokens == {d["id"]: d["token"] for d in sim.districts}
    # The tokens work.
    for token in tokens.values():
        assert sim.events(token=token).status_code == 200
    one = sim.http.get(f"/oauth/tokens?owner_type=district&district={sim.district}", auth=creds)
    assert [t["owner"]["id"] for t in one.json()["data"]] == [sim.district]
    assert sim.http.get("/oauth/tokens?owner_type=district", auth=("x", "y")).status_code == 401
    assert sim.http.get("/oauth/tokens?owner_type=district").status_code == 401
    assert sim.http.get("/oauth/tokens?owner_type=school", auth=creds).status_code == 400


def test_rotated_token_old_gets_401_new_works(sim: Sim) -> None:
    old = sim.token
    r = sim.http.post(f"/_sim/districts/{sim.district}/rotate-token")
    new = r.json()["token"]
    assert new != old
    assert sim.events(token=old).status_code == 401
    assert sim.events(token=new).status_code == 200
    listed = sim.http.get(
        "/oauth/tokens?owner_type=district", auth=("sim-client-id", "sim-client-secret")
    )
    assert new in {t["access_token"] for t in listed.json()["data"]}
    assert sim.http.post("/_sim/districts/nope/rotate-token").status_code == 404


def test_rate_limit_window_starts_at_first_request(make_sim: Any) -> None:
    sim: Sim = make_sim(rate_limit=3, rate_window=2.0)
    first_at = time.time()
    first = sim.events()
    assert first.headers["x-ratelimit-limit"] == "3"
    assert first.headers["x-ratelimit-remaining"] == "2"
    assert first.headers["x-ratelimit-bucket"] == "bearer"
    reset = int(first.headers["x-ratelimit-reset"])
    assert int(first_at + 2.0) - 1 <= reset <= int(time.time() + 2.0)  # not aligned to clock
    assert sim.events().headers["x-ratelimit-remaining"] == "1"
    assert sim.events().headers["x-ratelimit-remaining"] == "0"
    limited = sim.events()
    assert limited.status_code == 429
    assert limited.content == b""
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) == reset
    # Another district's token has its own bucket.
    assert sim.events(token=sim.districts[1]["token"]).status_code == 200
    # A new window opens at the first request after the old one ended.
    time.sleep(max(0.0, first_at + 2.1 - time.time()))
    again = sim.events()
    assert again.status_code == 200
    assert again.headers["x-ratelimit-remaining"] == "2"
    assert int(again.headers["x-ratelimit-reset"]) >= reset + 2


def _fault(sim: Sim, **spec: Any) -> dict[str, Any]:
    r = sim.http.post("/_sim/faults", json=spec)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_faults(sim: Sim, status: int) -> None:
    _fault(sim, kind=str(status), count=2)
    for _ in range(2):
        r = sim.events()
        assert r.status_code == status
        assert isinstance(r.json()["message"], str)
        assert "clever-request-id" in r.headers
    assert sim.events().status_code == 200


@pytest.mark.parametrize("status", [200, 502])
def test_html_fault(sim: Sim, status: int) -> None:
    _fault(sim, kind="html", status=status)
    r = sim.events()
    assert r.status_code == status
    assert r.headers["content-type"].startswith("text/html")
    assert r.text.lstrip().startswith("<html>")
    assert sim.events().status_code == 200


def test_truncated_fault(sim: Sim) -> None:
    sim.generate(10)
    _fault(sim, kind="truncated")
    r = sim.events()
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.content.startswith(b'{"data":[')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    assert len(sim.events().json()["data"]) == 10


def test_slow_fault(sim: Sim) -> None:
    _fault(sim, kind="slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        sim.http.get("/v3.1/events", headers=sim.auth(), timeout=0.2)
    _fault(sim, kind="slow", delay=0.3)
    started = time.monotonic()
    assert sim.events().status_code == 200
    assert time.monotonic() - started >= 0.3


def test_401_and_429_faults(sim: Sim) -> None:
    _fault(sim, kind="401")
    r = sim.events()
    assert r.status_code == 401
    assert "message" in r.json()
    _fault(sim, kind="429", reset_in=3)
    r = sim.events()
    assert r.status_code == 429
    assert r.content == b""
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert time.time() + 1 < int(r.headers["x-ratelimit-reset"]) <= time.time() + 4
    assert sim.events().status_code == 200


def test_fault_for_one_district_only(sim: Sim) -> None:
    _fault(sim, kind="503", count=1, district=sim.districts[1]["id"])
    assert sim.events().status_code == 200
    assert sim.events(token=sim.districts[1]["token"]).status_code == 503
    assert sim.events(token=sim.districts[1]["token"]).status_code == 200


def test_probabilistic_faults_and_clearing(sim: Sim) -> None:
    _fault(sim, kind="500", probability=0.5)
    statuses = [sim.events().status_code for _ in range(60)]
    assert 5 < statuses.count(500) < 55
    assert set(statuses) == {200, 500}
    assert sim.http.get("/_sim/faults").json()["data"][0]["kind"] == "500"
    assert sim.http.delete("/_sim/faults").json() == {"cleared": 1}
    assert all(sim.events().status_code == 200 for _ in range(10))
    bad = sim.http.post("/_sim/faults", json={"kind": "418"})
    assert bad.status_code == 400


def test_configured_random_faults(make_sim: Any) -> None:
    sim: Sim = make_sim(fault_probability=0.5)
    statuses = [sim.events().status_code for _ in range(80)]
    assert statuses.count(200) > 10
    assert len(set(statuses) - {200}) >= 2


def test_request_log(sim: Sim) -> None:
    sim.http.delete("/_sim/requests")
    _fault(sim, kind="502")
    sim.events("?limit=3")
    sim.events("?limit=4")
    sim.http.get("/v3.1/events", headers={"Authorization": "Bearer wrong"})
    log = sim.http.get("/_sim/requests").json()["data"]
    assert [(e["query"], e["status"], e["fault"]) for e in log] == [
        ("limit=3", 502, "502"),
        ("limit=4", 200, None),
        ("", 401, None),
    ]
    first = log[0]
    assert first["district"] == sim.district
    assert log[2]["district"] is None
    assert first["path"] == "/v3.1/events"
    assert first["started_monotonic"] <= first["ended_monotonic"]
    assert first["started_wall"] <= first["ended_wall"]
    newer = sim.http.get(f"/_sim/requests?since={log[1]['seq']}").json()["data"]
    assert [e["status"] for e in newer] == [401]
    sim.http.delete("/_sim/requests")
    assert sim.http.get("/_sim/requests").json()["data"] == []


def test_fault_on_a_path_prefix(sim: Sim) -> None:
    """A rule with a path fires only on requests under it: one Data API page gets its 429
    while the events and the other types answer."""
    rule = _fault(sim, kind="429", reset_in=2, path="/v3.1/users")
    assert rule["path"] == "/v3.1/users"
    assert sim.events().status_code == 200
    assert sim.http.get("/v3.1/schools", headers=sim.auth()).status_code == 200
    limited = sim.http.get("/v3.1/users?limit=5", headers=sim.auth())
    assert limited.status_code == 429
    assert limited.content == b""
    assert "clever-request-id" in limited.headers
    assert sim.http.get("/v3.1/users?limit=5", headers=sim.auth()).status_code == 200
    _fault(sim, kind="500", path=f"/v3.1/sections/{'0' * 24}")
    assert sim.http.get("/v3.1/sections", headers=sim.auth()).status_code == 200
    assert sim.http.get(f"/v3.1/sections/{'0' * 24}", headers=sim.auth()).status_code == 500
    for bad in ("v3.1/users", 5, ""):
        r = sim.http.post("/_sim/faults", json={"kind": "500", "path": bad})
        assert r.status_code == 400
        assert "'path'" in r.json()["error"]


def test_hold_back_the_events_then_release_one_rule(sim: Sim) -> None:
    """``count: null`` never runs out: the events endpoint answers 503 while records drift
    and events expire, until ``DELETE /_sim/faults/{id}`` takes that rule (and no other)."""
    ids = sim.generate(20)
    hold = _fault(sim, kind="503", count=None, path="/v3.1/events")
    assert hold["count"] is None
    other = _fault(sim, kind="500", count=5, path="/v3.1/terms", district=sim.districts[1]["id"])
    for _ in range(5):
        assert sim.events().status_code == 503
        assert sim.http.get(f"/v3.1/events/{ids[0]}", headers=sim.auth()).status_code == 503
    assert sim.http.get("/v3.1/users", headers=sim.auth()).status_code == 200
    r = sim.http.post(f"/_sim/districts/{sim.district}/drift", json={"updated": 3})
    assert r.status_code == 200
    sim.http.post("/_sim/expire", json={"count": 10})
    assert [f["id"] for f in sim.http.get("/_sim/faults").json()["data"]] == [
        hold["id"],
        other["id"],
    ]
    removed = sim.http.delete(f"/_sim/faults/{hold['id']}")
    assert removed.status_code == 200
    assert removed.json()["removed"]["id"] == hold["id"]
    assert removed.json()["removed"]["fired"] == 10
    body = sim.events().json()
    assert [item["data"]["id"] for item in body["data"]] == ids[10:]
    assert [f["id"] for f in sim.http.get("/_sim/faults").json()["data"]] == [other["id"]]
    assert sim.http.delete(f"/_sim/faults/{hold['id']}").status_code == 404
    assert sim.http.delete("/_sim/faults/nope").status_code == 404
    # A counted rule used up removes itself.
    used = _fault(sim, kind="502", path="/v3.1/events")
    assert sim.events().status_code == 502
    assert sim.http.delete(f"/_sim/faults/{used['id']}").status_code == 404
