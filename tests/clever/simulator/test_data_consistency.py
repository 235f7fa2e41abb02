"""The Data API is what the events made it (retained or expired), except for drift.

The property a roster sync relies on: read the whole Data API, apply every event after that
read in order (``created``/``updated``: the object by id; ``deleted``: gone), and the result
is the Data API read again, whatever the events were (generated, scripted with an object,
``districts.deleted``/``created``) and whether or not they have expired since. Drift breaks
it on purpose, by exactly the records it reports, with no event.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from tests.support.simulator import (
    DATA_TYPES,
    Sim,
    Snapshot,
    all_events,
    apply_events,
    data,
    read_data_api,
)


def _state(sim: Sim) -> dict[str, Any]:
    state: dict[str, Any] = next(
        d for d in sim.http.get("/_sim/state").json()["districts"] if d["id"] == sim.district
    )
    return state


def _some(snapshot: Snapshot, record_type: str, n: int = 0) -> dict[str, Any]:
    """The ``n``-th record of a type in the snapshot, as a copy."""
    records = [r for (t, _), r in sorted(snapshot.items()) if t == record_type]
    return copy.deepcopy(records[n])


def _scripted_batch(sim: Sim, snapshot: Snapshot) -> list[dict[str, Any]]:
    """Scripted events with objects that exercise each way an object meets the roster."""
    student = _some(snapshot, "users", 3)
    assert "roles" in student
    new_student = {**copy.deepcopy(student), "id": "5f" + "0" * 21 + "1"}
    new_student["name"]["first"] = "Scripted"
    course = _some(snapshot, "courses")
    course["name"] = "Scripted Course"
    section = _some(snapshot, "sections", 1)
    district = copy.deepcopy(sim.sim.district(sim.district).roster.district)
    district["name"] = "Scripted District Name"
    return [
        # a full new record: the generator may edit it afterwards
        {"type": "users.created", "object": new_student},
        # a partial replacement of an existing user: served as given, never edited
        {"type": "users.updated", "object": {"id": student["id"], "name": {"first": "Only"}}},
        {"type": "courses.updated", "object": course, "previous_attributes": {"name": "x"}},
        {"type": "sections.deleted", "object": section},
        {"type": "users.deleted", "object": {"id": "0" * 24}},  # never existed: no-op
        {"type": "schools.created", "object": {"id": "5f" + "0" * 21 + "2", "name": "New"}},
        {"type": "districts.updated", "object": district, "previous_attributes": {"name": "y"}},
        {"type": "districts.deleted"},  # generated: hides the district record
        {"type": "users.updated"},
        {"type": "districts.updated"},  # unshared: becomes districts.created, shown again
        {"type": "districts.deleted"},
    ]


def test_data_api_is_what_the_events_made_it(sim: Sim) -> None:
    before = read_data_api(sim, limit=13)
    assert {t for t, _ in before} == set(DATA_TYPES)

    def check() -> list[dict[str, Any]]:
        """The property, now: the first read plus every event since is the Data API."""
        events = all_events(sim)
        after = read_data_api(sim, limit=13)
        expected = apply_events(before, events)
        assert after.keys() == expected.keys()
        different = [key for key in after if after[key] != expected[key]]
        assert not different, different[:3]
        return events

    sim.generate(1500)
    check()
    sim.script(_scripted_batch(sim, read_data_api(sim)))  # ends unshared
    assert check()[-1]["type"] == "districts.deleted"
    sim.generate(1500)
    check()
    sim.script([{"type": "districts.created"}, {"type": "sections.created"}])
    sim.generate(500)
    events = check()
    assert len(events) == 3513
    kinds = Counter(e["type"] for e in events)
    for record_type in DATA_TYPES:  # every action of every type happened
        for action in ("created", "updated", "deleted"):
            assert kinds[f"{record_type}.{action}"], (record_type, action, kinds)

    # Expired events changed the Data API all the same.
    assert sim.http.post("/_sim/expire", json={"count": 10_000}).json()["expired"] == 3513
    assert all_events(sim) == []
    assert read_data_api(sim, limit=13) == apply_events(before, events)


def test_scripted_objects_set_and_delete_records(sim: Sim) -> None:
    snapshot = read_data_api(sim)
    user = _some(snapshot, "users", 2)
    changed = {**user, "email": "changed@example.com"}
    mine = copy.deepcopy(changed)
    sim.script([{"type": "users.updated", "object": changed, "previous_attributes": {}}])
    assert data(sim, f"users/{user['id']}").json()["data"] == mine
    # A later generated edit of that record (the roster keeps a copy) leaves the caller's
    # object alone; the Data API and the event agree on it.
    sim.sim.add_events(sim.district, [{"type": "users.updated", "object": changed}])
    sim.generate(300)
    assert changed == mine
    section = _some(snapshot, "sections")
    sim.script([{"type": "sections.deleted", "object": section}])
    gone = data(sim, f"sections/{section['id']}")
    assert gone.status_code == 404
    sim.script([{"type": "sections.created", "object": section}])
    assert data(sim, f"sections/{section['id']}").json()["data"] == section
    bad = sim.http.post(
        f"/_sim/districts/{sim.district}/events",
        json=[{"type": "users.created"}, {"type": "users.created", "object": {"name": "x"}}],
    )
    assert bad.status_code == 400
    assert "'id'" in bad.json()["error"]


def test_districts_deleted_and_created_hide_and_show_the_district(sim: Sim) -> None:
    sim.script([{"type": "districts.deleted"}])
    assert data(sim, "districts").json()["data"] == []
    assert data(sim, f"districts/{sim.district}").status_code == 404
    assert _state(sim)["shared"] is False
    # Records of other types stay; the events API still answers.
    assert data(sim, "schools").json()["data"]
    ids = sim.script([{"type": "districts.updated"}])  # unshared: shares it again
    event = sim.http.get(f"/v3.1/events/{ids[0]}", headers=sim.auth()).json()["data"]
    assert event["type"] == "districts.created"
    listed = data(sim, "districts").json()["data"]
    assert [item["data"] for item in listed] == [event["data"]["object"]]
    assert _state(sim)["shared"] is True


# -- drift -------------------------------------------------------------------------------


def _drift(sim: Sim, **body: Any) -> Any:
    return sim.http.post(f"/_sim/districts/{sim.district}/drift", json=body)


def test_drift_changes_records_with_no_event(sim: Sim) -> None:
    sim.generate(50)
    before = read_data_api(sim)
    state = _state(sim)
    r = _drift(sim, created=4, updated=6, deleted=3)
    assert r.status_code == 200, r.text
    drift = r.json()
    assert set(drift) == {"created", "updated", "deleted"}
    assert [len(drift[k]) for k in ("created", "updated", "deleted")] == [4, 6, 3]
    pairs = {k: {(p["type"], p["id"]) for p in drift[k]} for k in drift}
    assert not pairs["created"] & pairs["updated"]
    assert not pairs["updated"] & pairs["deleted"]
    after = read_data_api(sim)
    # No event: the events API is as it was.
    assert (_state(sim)["event_count"], _state(sim)["newest_event_id"]) == (
        state["event_count"],
        state["newest_event_id"],
    )
    assert len(all_events(sim)) == 50
    # The Data API changed by exactly the reported records.
    assert pairs["created"] == after.keys() - before.keys()
    assert pairs["deleted"] == before.keys() - after.keys()
    changed = {key for key in before.keys() & after.keys() if before[key] != after[key]}
    assert changed == pairs["updated"]
    for record_type, rid in pairs["created"]:
        assert data(sim, f"{record_type}/{rid}").status_code == 200
    for record_type, rid in pairs["deleted"]:
        assert data(sim, f"{record_type}/{rid}").status_code == 404
    # An updated record changed as an event's edit would: last_modified moves with it.
    for record_type, rid in pairs["updated"]:
        if "last_modified" in before[(record_type, rid)]:
            assert (
                after[(record_type, rid)]["last_modified"]
                >= before[(record_type, rid)]["last_modified"]
            )
    # Events generated afterwards keep the Data API consistent with the drifted records.
    sim.generate(300)
    assert read_data_api(sim) == apply_events(after, all_events(sim)[50:])


def test_drift_by_record_type_and_python_method(sim: Sim) -> None:
    r = _drift(sim, updated=2, created=1, record_types=["terms"])
    assert r.status_code == 200
    body = r.json()
    assert {p["type"] for k in body for p in body[k]} == {"terms"}
    district = sim.sim.district(sim.district)
    old = copy.deepcopy(district.roster.district)
    result = sim.sim.drift(sim.district, updated=1, record_types=["districts"])
    assert result.updated == [("districts", sim.district)]
    assert result.created == result.deleted == []
    new = data(sim, "districts").json()["data"][0]["data"]
    assert new["last_sync"] != old["last_sync"]
    assert new == district.roster.district


def test_drift_errors_change_nothing(make_sim: Any) -> None:
    sim: Sim = make_sim(terms_per_district=1)
    before = read_data_api(sim)
    for body, status, message in (
        ({"deleted": 1, "record_types": ["terms"]}, 400, "can drift by deletion"),
        ({"updated": 2, "record_types": ["terms"]}, 400, "can drift by an update"),
        ({"created": 1, "record_types": ["districts"]}, 400, "districts cannot drift"),
        ({"created": -1}, 400, "'created' must be an integer >= 0"),
        ({"updated": 1.5}, 400, "'updated' must be an integer >= 0"),
        ({"updated": 1, "record_types": ["students"]}, 400, "unknown 'students'"),
        ({"updated": 1, "record_types": "users"}, 400, "must be a list"),
        ({"updated": 1, "record_types": []}, 400, "must list some of"),
        ({"modified": 1}, 400, "unknown field 'modified'"),
    ):
        r = _drift(sim, **body)
        assert r.status_code == status, body
        assert message in r.json()["error"], (body, r.json())
    assert sim.http.post(f"/_sim/districts/{'0' * 24}/drift", json={}).status_code == 404
    assert read_data_api(sim) == before
    # The last record of a type never drifts away; deleting all but it works.
    courses = sum(1 for t, _ in before if t == "courses")
    r = _drift(sim, deleted=courses - 1, record_types=["courses"])
    assert r.status_code == 200
    assert len(data(sim, "courses").json()["data"]) == 1
