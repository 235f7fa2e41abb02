"""The Data API (``GET /v3.1/{districts,schools,users,...}``): paging against the recordings,
limits and errors, the ``role`` filter, single records, auth and rate limit, a large district.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
from typing import Any

import pytest

from relay.clever.simulator.roster import LARGE_DISTRICT, Pool, RosterSize
from tests.support.simulator import (
    DATA_TYPES,
    RECORDED,
    Sim,
    data,
    read_data_api,
    recorded,
)

_ID = re.compile(r"[0-9a-f]{24}")

#: the recorded demo district's shape: 4 schools and 5 terms in all; more than 200 users,
#: sections and courses (their second recorded page of 100 has a ``next``)
DEMO_SIZE = {
    "schools": 4,
    "students_per_school": 60,
    "teachers_per_school": 2,
    "sections_per_school": 60,
    "courses": 250,
    "terms": 5,
    "resources": 3,
}


def _links(body: dict[str, Any]) -> dict[str, str]:
    return {link["rel"]: link["uri"] for link in body["links"]}


def _new_district(sim: Sim, size: dict[str, int]) -> tuple[str, str]:
    r = sim.http.post("/_sim/districts", json={"name": "Demo-shaped ISD", "size": size})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["token"]


def _recorded_ids(record_type: str) -> list[str]:
    """Every record id the recordings show for ``record_type``, ascending."""
    ids: set[str] = set()
    for path in (RECORDED / "data-api").glob(f"{record_type}*.json"):
        body = recorded(f"data-api/{path.name}")["response"]["body"]
        ids.update(item["data"]["id"] for item in body.get("data", []))
    return sorted(ids)


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name for p in (RECORDED / "data-api").glob("*.json") if p.name != "resources_app.json"
    ),
)
def test_every_recorded_list_is_answered_alike(sim: Sim, name: str) -> None:
    """Each recorded request, asked of a district of the same shape with its ids put at the
    same positions, gets the same status, page length, item ``uri``s and links (byte for
    byte, after /v3.0 → /v3.1 and the id mapping), and the recorded headers."""
    rec = recorded(f"data-api/{name}")
    record_type = rec["request"]["uri"].split("?")[0].split("/")[2]
    district_id, token = _new_district(sim, DEMO_SIZE)
    ours = sorted(sim.sim.district(district_id).roster.pools[record_type].items)
    theirs = _recorded_ids(record_type)
    assert len(ours) > len(theirs) or record_type in ("schools", "terms", "districts")
    if record_type in ("schools", "terms", "districts"):
        assert len(ours) == len(theirs)  # the recordings show all of them
    mapping = dict(zip(theirs, ours, strict=False))

    def translate(text: str) -> str:
        return _ID.sub(lambda m: mapping[m.group(0)], text.replace("/v3.0/", "/v3.1/"))

    r = sim.http.get(translate(rec["request"]["uri"]), headers={"Authorization": f"Bearer {token}"})
    response = rec["response"]
    assert r.status_code == response["status"] == 200
    assert r.headers["content-type"] == response["headers"]["content-type"]
    assert {h for h in response["headers"] if h.startswith("x-ratelimit")} <= set(r.headers)
    body = r.json()
    assert set(body) == set(response["body"]) == {"data", "links"}
    assert body["links"] == [
        {"rel": link["rel"], "uri": translate(link["uri"])} for link in response["body"]["links"]
    ]
    assert [item["uri"] for item in body["data"]] == [
        translate(item["uri"]) for item in response["body"]["data"]
    ]
    for item in body["data"]:
        assert set(item) == {"data", "uri"}
        assert item["data"]["id"] == item["uri"].rsplit("/", 1)[1]


def test_records_carry_the_recorded_fields(sim: Sim) -> None:
    """Each type's records have at least the fields of the recorded demo district's, but for
    a student's ``roles.student.email``: the Data API sent it and the events of the same
    records did not, and here one object serves both APIs (the events' shape)."""
    for record_type in ("districts", "schools", "users", "sections", "courses", "terms"):
        theirs = recorded(f"data-api/{record_type}.json")["response"]["body"]["data"][0]["data"]
        items = data(sim, f"{record_type}?limit=10000").json()["data"]
        mine = next(
            i["data"] for i in items if record_type != "users" or "student" in i["data"]["roles"]
        )
        assert set(theirs) <= set(mine), record_type
        if record_type == "users":
            wanted = set(theirs["roles"]["student"]) - {"email"}
            assert wanted <= set(mine["roles"]["student"])


def test_limit_cursors_and_errors(sim: Sim) -> None:
    users = sorted(sim.sim.district(sim.district).roster.pools["users"].items)
    assert len(users) > 30
    assert len(data(sim, "users").json()["data"]) == min(100, len(users))
    assert [i["data"]["id"] for i in data(sim, "users?limit=10000").json()["data"]] == users
    too_big = data(sim, "users?limit=10001")
    assert too_big.status_code == 413
    assert isinstance(too_big.json()["message"], str)
    for query in (
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "starting_after=nope",
        "ending_before=last",
        f"starting_after={users[0]}x",
        "role=students",
        "role=",
    ):
        r = data(sim, f"users?{query}")
        assert r.status_code == 400, query
        assert isinstance(r.json()["message"], str)
    # starting_after: the records after it; ending_before: the `limit` just before it.
    body = data(sim, f"users?limit=5&starting_after={users[9]}").json()
    assert [i["data"]["id"] for i in body["data"]] == users[10:15]
    assert body["links"] == [
        {"rel": "self", "uri": f"/v3.1/users?limit=5&starting_after={users[9]}"},
        {"rel": "prev", "uri": f"/v3.1/users?limit=5&ending_before={users[10]}"},
        {"rel": "next", "uri": f"/v3.1/users?limit=5&starting_after={users[14]}"},
    ]
    body = data(sim, f"users?limit=5&ending_before={users[9]}").json()
    assert [i["data"]["id"] for i in body["data"]] == users[4:9]
    assert [
        i["data"]["id"] for i in data(sim, f"users?ending_before={users[2]}").json()["data"]
    ] == (users[:2])
    # A cursor that is no record's id still places the page; past the end: empty, self only.
    gap = users[3][:-1] + ("0" if users[3][-1] != "0" else "1")
    after_gap = [u for u in users if u > gap][:3]
    assert [
        i["data"]["id"] for i in data(sim, f"users?limit=3&starting_after={gap}").json()["data"]
    ] == (after_gap)
    end = data(sim, f"users?starting_after={'f' * 24}").json()
    assert end == {
        "data": [],
        "links": [{"rel": "self", "uri": f"/v3.1/users?starting_after={'f' * 24}"}],
    }
    # Unknown parameters (count=) are ignored and kept in self only, as recorded.
    counted = data(sim, "districts?count=5").json()
    assert counted["links"] == [{"rel": "self", "uri": "/v3.1/districts?count=5"}]


def test_a_full_last_page_has_next_and_the_next_page_is_empty(sim: Sim) -> None:
    schools = sorted(sim.sim.district(sim.district).roster.pools["schools"].items)
    body = data(sim, f"schools?limit={len(schools)}").json()
    assert (
        _links(body)["next"] == f"/v3.1/schools?limit={len(schools)}&starting_after={schools[-1]}"
    )
    after = data(sim, _links(body)["next"].removeprefix("/v3.1/")).json()
    assert after["data"] == []
    assert [link["rel"] for link in after["links"]] == ["self"]


@pytest.mark.parametrize("role", ["student", "teacher", "staff", "district_admin", "contact"])
def test_role_filter(sim: Sim, role: str) -> None:
    pool = sim.sim.district(sim.district).roster.pools["users"]
    wanted = sorted(rid for rid, user in pool.items.items() if role in user["roles"])
    assert wanted
    got = read_role(sim, role, limit=3)
    assert got == wanted
    # The filter is kept in next and prev, limit first, the cursor last.
    body = data(sim, f"users?role={role}&limit=1").json()
    assert _links(body)["next"] == f"/v3.1/users?limit=1&role={role}&starting_after={wanted[0]}"
    if len(wanted) > 1:
        body = data(sim, f"users?role={role}&starting_after={wanted[0]}").json()
        assert _links(body)["prev"] == f"/v3.1/users?role={role}&ending_before={wanted[1]}"


def read_role(sim: Sim, role: str, limit: int) -> list[str]:
    ids: list[str] = []
    uri: str | None = f"users?role={role}&limit={limit}"
    while uri is not None:
        body = data(sim, uri).json()
        ids += [item["data"]["id"] for item in body["data"]]
        uri = _links(body).get("next", "").removeprefix("/v3.1/") or None
    return ids


def test_single_records_and_404(sim: Sim) -> None:
    snapshot = read_data_api(sim)
    assert {t for t, _ in snapshot} == set(DATA_TYPES)
    for (record_type, rid), record in list(snapshot.items())[::7]:
        r = data(sim, f"{record_type}/{rid}")
        assert r.status_code == 200
        assert r.json() == {
            "data": record,
            "links": [{"rel": "self", "uri": f"/v3.1/{record_type}/{rid}"}],
        }
        assert "clever-request-id" in r.headers
    for path in (f"users/{'0' * 24}", "users/nope", f"districts/{'0' * 24}"):
        missing = data(sim, path)
        assert missing.status_code == 404
        assert missing.json() == {"message": "Resource not found"}
    # Another district's record is not found with this district's token.
    other = sim.districts[1]
    other_school = next(iter(sim.sim.district(other["id"]).roster.pools["schools"].items))
    assert data(sim, f"schools/{other_school}").status_code == 404
    assert data(sim, f"schools/{other_school}", token=other["token"]).status_code == 200
    # A type Clever does not have is Express's HTML 404, as for any unknown path.
    assert data(sim, "students").headers["content-type"].startswith("text/html")


def test_districts_lists_the_one_district(sim: Sim) -> None:
    body = data(sim, "districts").json()
    assert [item["data"]["id"] for item in body["data"]] == [sim.district]
    assert body["links"] == [{"rel": "self", "uri": "/v3.1/districts"}]
    assert body["data"][0]["uri"] == f"/v3.1/districts/{sim.district}"


def test_auth_rate_limit_and_request_ids(make_sim: Any) -> None:
    sim: Sim = make_sim(rate_limit=3, rate_window=30.0)
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = sim.http.get("/v3.1/users", headers=headers)
        assert r.status_code == 401
        assert isinstance(r.json()["message"], str)
        assert "clever-request-id" in r.headers
    seen = set()
    for path in ("users", f"districts/{sim.district}", "events"):  # one bucket for both APIs
        r = data(sim, path)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-bucket"] == "bearer"
        seen.add(r.headers["clever-request-id"])
    assert len(seen) == 3
    limited = data(sim, "schools")
    assert limited.status_code == 429
    assert limited.content == b""
    assert limited.headers["x-ratelimit-remaining"] == "0"


def test_roster_size_is_validated(sim: Sim) -> None:
    for size, message in (
        ({"schools": 0}, "'size.schools' must be an integer >= 1"),
        ({"students_per_school": -1}, "'size.students_per_school' must be an integer >= 0"),
        ({"courses": 1.5}, "'size.courses' must be an integer >= 1"),
        ({"terms": True}, "'size.terms' must be an integer >= 1"),
        ({"pupils": 3}, "unknown size field 'pupils'"),
        ({"schools": 10_000, "students_per_school": 10_000}, "at most 2,000,000"),
        ([], "'size' must be an object"),
    ):
        r = sim.http.post("/_sim/districts", json={"size": size})
        assert r.status_code == 400, size
        assert message in r.json()["error"], (size, r.json())
    state = sim.http.get("/_sim/state").json()
    assert len(state["districts"]) == 2  # nothing was added
    small = {"schools": 1, "students_per_school": 0, "teachers_per_school": 0}
    r = sim.http.post("/_sim/districts", json={"size": small})
    assert r.status_code == 201
    expected = RosterSize(**small)
    assert sum(r.json()["records"].values()) == expected.records()
    assert r.json()["records"]["users"] == expected.users() == 2


def test_pool_keeps_its_indexes_through_adds_replaces_and_removes() -> None:
    """The sorted ids and the per-role lists, kept up to date after the first read, equal
    what a fresh sort gives after any sequence of changes."""
    rng = random.Random(5)
    roles = ("student", "teacher", "contact")
    pool = Pool(lambda record: list(record["roles"]))
    ids = [f"{rng.getrandbits(96):024x}" for _ in range(300)]

    def user(rid: str) -> dict[str, Any]:
        return {"id": rid, "roles": {r: {} for r in rng.sample(roles, rng.randint(0, 2))}}

    for rid in ids[:100]:
        pool.add(user(rid))
    assert pool.sorted_ids() == sorted(ids[:100])
    for _ in range(2000):
        rid = rng.choice(ids)
        if rng.random() < 0.3:
            pool.remove(rid)
        else:
            pool.add(user(rid), pickable=rng.random() < 0.7)
    assert pool.sorted_ids() == sorted(pool.items)
    for role in roles:
        assert pool.sorted_ids(role) == sorted(
            r for r, u in pool.items.items() if role in u["roles"]
        )
    assert sorted(pool.keys) == sorted(set(pool.keys))
    assert set(pool.keys) <= set(pool.items)
    assert all(pool.keys[pool.pos[k]] == k for k in pool.keys)


def test_large_district_builds_fast_and_pages_at_10000(sim: Sim) -> None:
    """The benchmark district: 100,000 records, 50,002 users, built in seconds, every user
    read at ``limit=10000`` in a few pages, each cheap at any depth."""
    size = dataclasses.asdict(LARGE_DISTRICT)
    started = time.monotonic()
    district_id, token = _new_district(sim, size)
    built = time.monotonic() - started
    state = next(
        d for d in sim.http.get("/_sim/state").json()["districts"] if d["id"] == district_id
    )
    assert sum(state["records"].values()) == LARGE_DISTRICT.records() == 100_000
    assert state["records"]["users"] == LARGE_DISTRICT.users() == 50_002
    assert state["records"]["sections"] == 49_500
    assert built < 30, built  # ~3 s alone; generous for a shared machine
    seen = 0
    slowest = 0.0
    uri: str | None = "/v3.1/users?limit=10000"
    pages = 0
    while uri is not None:
        started = time.monotonic()
        r = sim.http.get(uri, headers={"Authorization": f"Bearer {token}"})
        slowest = max(slowest, time.monotonic() - started)
        body = r.json()
        seen += len(body["data"])
        pages += 1
        uri = _links(body).get("next")
    assert seen == 50_002
    assert pages == 6
    assert slowest < 10, slowest
    students = data(sim, "users?role=student&limit=1", token=token).json()
    assert "student" in students["data"][0]["data"]["roles"]
