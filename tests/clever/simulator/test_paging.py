"""GET /v3.1/events and /v3.1/events/{id}: order, paging, limits, links, expiry, filters."""

from __future__ import annotations

import time
from typing import Any

from tests.support.simulator import Sim


def ids_of(body: dict[str, Any]) -> list[str]:
    return [item["data"]["id"] for item in body["data"]]


def links_of(body: dict[str, Any]) -> dict[str, str]:
    return {link["rel"]: link["uri"] for link in body["links"]}


def test_no_cursor_starts_at_oldest_and_pages_to_the_end(sim: Sim) -> None:
    made = sim.generate(250)
    seen: list[str] = []
    query = "?limit=40"
    pages = 0
    while True:
        r = sim.events(query)
        assert r.status_code == 200
        body = r.json()
        if not body["data"]:
            break
        seen += ids_of(body)
        # Build the next request from the last id, as Clever's docs say; it equals the link.
        query = f"?limit=40&starting_after={seen[-1]}"
        assert links_of(body)["next"] == f"/v3.1/events{query}"
        pages += 1
    assert seen == made
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert pages == 7  # 6 full pages + 10; the 8th request is empty and stops


def test_ids_are_objectid_like_and_created_matches_the_id(sim: Sim) -> None:
    before = int(time.time())
    sim.generate(30)
    body = sim.events().json()
    for item in body["data"]:
        event = item["data"]
        assert len(event["id"]) == 24
        assert int(event["id"], 16) >= 0
        seconds = int(event["id"][:8], 16)
        assert before - 1 <= seconds <= time.time() + 1
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))
        assert event["created"] == stamp
        assert item["uri"] == f"/v3.1/events/{event['id']}"


def test_limit_default_max_and_errors(sim: Sim) -> None:
    sim.generate(150)
    assert len(sim.events().json()["data"]) == 100
    assert len(sim.events("?limit=10000").json()["data"]) == 150
    too_big = sim.events("?limit=10001")
    assert too_big.status_code == 413
    assert "message" in too_big.json()
    for bad in ("0", "-5", "abc", "1.5", ""):
        r = sim.events(f"?limit={bad}")
        assert r.status_code == 400, bad
        assert "message" in r.json()
    assert sim.events("?starting_after=not-an-id").status_code == 400
    assert sim.events("?record_type=students").status_code == 400


def test_links_format(sim: Sim) -> None:
    ids = sim.generate(30)
    body = sim.events().json()
    # No parameters: self is the bare "?", next has no limit, no prev (events.json).
    assert body["links"] == [
        {"rel": "self", "uri": "/v3.1/events?"},
        {"rel": "next", "uri": f"/v3.1/events?starting_after={ids[-1]}"},
    ]
    body = sim.events("?limit=5").json()
    assert body["links"] == [
        {"rel": "self", "uri": "/v3.1/events?limit=5"},
        {"rel": "next", "uri": f"/v3.1/events?limit=5&starting_after={ids[4]}"},
    ]
    body = sim.events(f"?starting_after={ids[4]}").json()
    assert body["links"] == [
        {"rel": "self", "uri": f"/v3.1/events?starting_after={ids[4]}"},
        {"rel": "prev", "uri": f"/v3.1/events?ending_before={ids[5]}"},
        {"rel": "next", "uri": f"/v3.1/events?starting_after={ids[-1]}"},
    ]
    # The end: empty data, only self.
    end = sim.events(f"?starting_after={ids[-1]}").json()
    assert end == {"data": [], "links": [{"rel": "self", "uri": end["links"][0]["uri"]}]}


def test_ending_before_last_gives_the_newest_ascending(sim: Sim) -> None:
    ids = sim.generate(50)
    body = sim.events("?ending_before=last&limit=1").json()
    assert ids_of(body) == [ids[-1]]
    body = sim.events("?ending_before=last&limit=5").json()
    assert ids_of(body) == ids[-5:]
    # ending_before=<id>: the events just before it, still ascending.
    body = sim.events(f"?ending_before={ids[20]}&limit=3").json()
    assert ids_of(body) == ids[17:20]
    assert links_of(body)["prev"] == f"/v3.1/events?ending_before={ids[17]}&limit=3"
    assert links_of(body)["next"] == f"/v3.1/events?limit=3&starting_after={ids[19]}"


def test_silent_expiry_returns_oldest_retained_with_a_prev_link(sim: Sim) -> None:
    ids = sim.generate(20)
    cursor = ids[4]
    r = sim.http.post("/_sim/expire", json={"before_id": ids[10], "district": sim.district})
    assert r.json() == {"expired": 10}
    r = sim.events(f"?starting_after={cursor}")
    assert r.status_code == 200  # no error, no marker: exactly events_with_starting_after.json
    body = r.json()
    assert ids_of(body) == ids[10:]
    assert body["links"] == [
        {"rel": "self", "uri": f"/v3.1/events?starting_after={cursor}"},
        {"rel": "prev", "uri": f"/v3.1/events?ending_before={ids[10]}"},
        {"rel": "next", "uri": f"/v3.1/events?starting_after={ids[-1]}"},
    ]
    assert set(body) == {"data", "links"}
    # An expired event is gone from /events/{id} too.
    assert sim.http.get(f"/v3.1/events/{ids[0]}", headers=sim.auth()).status_code == 404


def test_retention_drops_old_events(make_sim: Any) -> None:
    sim: Sim = make_sim(retention_seconds=2)
    old = sim.generate(5)
    time.sleep(3.1)
    new = sim.generate(3)
    body = sim.events(f"?starting_after={old[0]}").json()
    assert ids_of(body) == new
    state = sim.http.get("/_sim/state").json()["districts"][0]
    assert state["event_count"] == 3
    assert state["oldest_event_id"] == new[0]


def test_single_event(sim: Sim) -> None:
    ids = sim.generate(3)
    r = sim.http.get(f"/v3.1/events/{ids[1]}", headers=sim.auth())
    assert r.status_code == 200
    body = r.json()
    assert body["links"] == [{"rel": "self", "uri": f"/v3.1/events/{ids[1]}"}]
    listed = sim.events().json()["data"][1]["data"]
    assert body["data"] == listed  # bare event, no {data, uri} wrapper
    missing = sim.http.get(f"/v3.1/events/{'0' * 24}", headers=sim.auth())
    assert missing.status_code == 404
    assert "message" in missing.json()
    # Another district's event is not visible.
    other = sim.districts[1]["token"]
    assert sim.http.get(f"/v3.1/events/{ids[1]}", headers=sim.auth(other)).status_code == 404


def test_districts_are_separate(sim: Sim) -> None:
    mine = sim.generate(5)
    theirs = sim.generate(4, district=sim.districts[1]["id"])
    assert ids_of(sim.events().json()) == mine
    assert ids_of(sim.events(token=sim.districts[1]["token"]).json()) == theirs


def test_record_type_filter(sim: Sim) -> None:
    sim.generate(300)
    all_events = [item["data"] for item in sim.events("?limit=10000").json()["data"]]
    body = sim.events("?record_type=sections&record_type=schools&limit=10000").json()
    got = [item["data"] for item in body["data"]]
    assert got == [e for e in all_events if e["type"].split(".")[0] in ("sections", "schools")]
    assert got
    links = links_of(sim.events("?record_type=users&limit=5").json())
    assert links["next"].startswith("/v3.1/events?limit=5&record_type=users&starting_after=")


def _schools(event: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    kind = event["type"].split(".")[0]
    for rec in (event["data"]["object"], event["data"].get("previous_attributes") or {}):
        if kind == "schools" and "id" in rec:
            found.add(rec["id"])
        if kind == "sections" and "school" in rec:
            found.add(rec["school"])
        if kind == "users":
            for role in rec.get("roles", {}).values():
                if "school" in role:
                    found.add(role["school"])
                found.update(role.get("schools", []))
    return found


def test_school_filter_includes_moves_in_and_out(sim: Sim) -> None:
    sim.generate(600)
    all_events = [item["data"] for item in sim.events("?limit=10000").json()["data"]]
    school = next(e["data"]["object"]["id"] for e in all_events if e["type"] == "schools.updated")
    body = sim.events(f"?school={school}&limit=10000").json()
    got = [item["data"] for item in body["data"]]
    assert got == [e for e in all_events if school in _schools(e)]
    moved_out = [
        e
        for e in got
        if e["type"] == "users.updated"
        and "school" in e["data"].get("previous_attributes", {}).get("roles", {}).get("student", {})
    ]
    assert moved_out  # students moving between schools show up under both schools


def test_unknown_paths_get_the_express_html_404(sim: Sim) -> None:
    r = sim.http.get("/v3.1/xyz", headers=sim.auth())
    assert r.status_code == 404
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<pre>Cannot GET /v3.1/xyz</pre>" in r.text
    assert "clever-request-id" not in r.headers
    assert r.headers["x-ratelimit-bucket"] == "bearer"
    post = sim.http.post("/v3.1/events", headers=sim.auth())
    assert post.status_code == 404
    assert "Cannot POST /v3.1/events" in post.text
