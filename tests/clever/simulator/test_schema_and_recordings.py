"""Generated events against Clever's v3.1 OpenAPI schemas, and responses against recordings.

Validation notes (where real Clever and its spec disagree, real Clever wins):

* The spec puts ``previous_attributes`` at the event's top level, beside ``data``, and says its
  values are objects. Real Clever (clever-recorded/*.json) puts it **under ``data``**, beside
  ``object``, and its values are whatever the changed fields hold (``{"last_sync": "..."}``).
  So we validate the event against the spec's ``<type>`` schema (``data.object`` against the
  record schema), require that no top-level ``previous_attributes`` exists, and validate
  ``data.previous_attributes`` against the *record* schema: it holds old values of the same
  fields, so it must be a valid partial record.
* The spec is OpenAPI 3.0: ``nullable: true`` is turned into JSON Schema's ``"null"`` type.
* To catch misspelt fields, record schemas (not the event envelopes, which use ``allOf``) are
  made strict: ``additionalProperties: false``, plus the fields real Clever sends beyond the
  spec (:data:`OBSERVED_EXTRAS`: a contact's ``relationship``, ``students`` and ``type``).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from relay.clever.simulator.stream import EVENT_TYPES
from tests.support.simulator import OPENAPI, Sim, recorded

SPEC_URI = "urn:clever:events-v3.1"
RECORD_SCHEMAS = {
    "courses": "Course",
    "districts": "District",
    "resources": "Resource",
    "schools": "School",
    "sections": "Section",
    "terms": "Term",
    "users": "User",
}
STRICT = {
    "Course", "District", "DistrictContact", "Resource", "School", "Section", "Term", "User",
    "Roles", "Student", "Teacher", "Staff", "Contact", "DistrictAdmin", "Name", "Location",
    "Principal", "Credentials", "SchoolEnrollment", "StudentRelationship",
}  # fmt: skip
OBSERVED_EXTRAS = {
    "Contact": {
        "relationship": {"type": "string"},
        "students": {"type": "array", "items": {"type": "string"}},
        "type": {"type": "string"},
    }
}


def _openapi_to_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable"):
            if "type" in out:
                out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


@cache
def registry() -> Registry:
    spec = yaml.safe_load(OPENAPI.read_text())
    spec = _openapi_to_jsonschema(copy.deepcopy(spec))
    for name in STRICT:
        spec["components"]["schemas"][name]["additionalProperties"] = False
    for name, extra in OBSERVED_EXTRAS.items():
        spec["components"]["schemas"][name]["properties"].update(extra)
    resource: Resource[Any] = Resource.from_contents(spec, DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def validator(schema_name: str) -> Draft202012Validator:
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=registry())


def check_event(event: dict[str, Any]) -> None:
    type_ = event["type"]
    record_type, action = type_.split(".")
    validator(type_).validate(event)
    assert set(event) == {"id", "type", "created", "data"}
    assert "previous_attributes" not in event  # where the spec would put it
    data = event["data"]
    validator(RECORD_SCHEMAS[record_type]).validate(data["object"])
    if action == "updated":
        assert set(data) == {"object", "previous_attributes"}
        assert data["previous_attributes"]
        validator(RECORD_SCHEMAS[record_type]).validate(data["previous_attributes"])
    else:
        assert set(data) == {"object"}  # no previous_attributes key at all


def test_every_event_type_validates_against_the_spec(sim: Sim) -> None:
    sim.script([{"type": t} for t in EVENT_TYPES])
    sim.generate(1500)
    body = sim.events("?limit=10000").json()
    validator("EventsResponse").validate(body)
    types = set()
    for item in body["data"]:
        check_event(item["data"])
        types.add(item["data"]["type"])
    assert types == set(EVENT_TYPES)
    one = sim.http.get(body["data"][0]["uri"], headers=sim.auth()).json()
    validator("EventResponse").validate(one)


def test_previous_attributes_follow_clevers_rules(sim: Sim) -> None:
    sim.generate(2000)
    events = [item["data"] for item in sim.events("?limit=10000").json()["data"]]
    moves = 0
    for event in events:
        if not event["type"].endswith(".updated"):
            continue
        prev, obj = event["data"]["previous_attributes"], event["data"]["object"]
        student = prev.get("roles", {}).get("student", {})
        if "school" in student:
            moves += 1
            assert "schools" in student  # a school change also carries schools
            new = obj["roles"]["student"]
            assert new["school"] != student["school"]
            assert new["school"] in new["schools"]
        for key, old in prev.items():
            # Arrays come whole; other leaves are old values of fields the object has.
            assert key in obj
            if isinstance(obj[key], list):
                assert isinstance(old, list)
    assert moves > 0


def test_students_teachers_staff_contacts_shapes(sim: Sim) -> None:
    sim.script([{"type": "users.created"}] * 200)
    users = [item["data"]["data"]["object"] for item in sim.events("?limit=10000").json()["data"]]
    roles = {next(iter(u["roles"])) for u in users}
    assert {"student", "teacher", "contact"} <= roles
    for user in users:
        assert set(user["name"]) >= {"first", "last"}
        role, body = next(iter(user["roles"].items()))
        if role in ("student", "teacher"):
            assert body["school"] in body["schools"]
        if role == "student":
            assert set(user["name"]) == {"first", "last", "middle"}
            assert body["grade"]
            assert "@" in user["email"]
        if role == "contact":
            assert "school" not in body
            assert "schools" not in body


# -- the recordings as a reference ---------------------------------------------------------


def _rel(links: list[dict[str, str]]) -> list[str]:
    return [link["rel"] for link in links]


def test_list_response_matches_recorded_shapes(sim: Sim) -> None:
    rec = recorded("events.json")["response"]
    sim.script(
        [{"type": "users.created"}, {"type": "users.updated"}, {"type": "districts.updated"}]
    )
    sim.generate(200)
    r = sim.events()
    body = r.json()
    assert r.headers["content-type"] == rec["headers"]["content-type"]
    recorded_headers = {h for h in rec["headers"] if h != "content-type"}
    assert recorded_headers <= set(r.headers)
    assert set(body) == set(rec["body"])
    assert _rel(body["links"]) == _rel(rec["body"]["links"])
    assert body["links"][0]["uri"] == rec["body"]["links"][0]["uri"].replace("v3.0", "v3.1")
    assert len(body["data"]) == len(rec["body"]["data"]) == 100
    rec_items = {item["data"]["type"]: item for item in rec["body"]["data"]}
    our_items = {item["data"]["type"]: item for item in body["data"]}
    for type_ in set(rec_items) & set(our_items):
        ours, theirs = our_items[type_], rec_items[type_]
        assert set(ours) == set(theirs) == {"data", "uri"}
        assert set(ours["data"]) == set(theirs["data"])
        assert set(ours["data"]["data"]) == set(theirs["data"]["data"])
        assert len(ours["data"]["id"]) == len(theirs["data"]["id"]) == 24
        assert ours["data"]["created"].endswith(".000Z")
        assert theirs["data"]["created"].endswith(".000Z")
        # Our records carry at least the fields Clever's demo district sends.
        ours_obj, their_obj = ours["data"]["data"]["object"], theirs["data"]["data"]["object"]
        assert set(their_obj) <= set(ours_obj), type_
        if type_.startswith("users") and "student" in their_obj["roles"]:
            student = next(
                i["data"]["data"]["object"]
                for i in body["data"]
                if "student" in i["data"]["data"]["object"].get("roles", {})
            )
            assert set(their_obj["roles"]["student"]) <= set(student["roles"]["student"])


def test_paged_and_expired_responses_match_recorded_links(sim: Sim) -> None:
    expired = recorded("events_with_starting_after.json")["response"]["body"]
    nxt = recorded("events_next-2.json")["response"]["body"]
    limited = recorded("events_with_limit.json")["response"]["body"]
    ids = sim.generate(150)
    sim.http.post("/_sim/expire", json={"count": 20})
    gone = ids[3]
    body = sim.events(f"?starting_after={gone}").json()
    assert _rel(body["links"]) == _rel(expired["links"]) == ["self", "prev", "next"]
    assert body["links"][1]["uri"] == f"/v3.1/events?ending_before={ids[20]}"
    page2 = sim.events(f"?starting_after={ids[119]}").json()
    assert _rel(page2["links"]) == _rel(nxt["links"])
    lim = sim.events("?limit=25").json()
    ours = [link["uri"].split("?")[1].split("&")[0].split("=")[0] for link in lim["links"]]
    theirs = [link["uri"].split("?")[1].split("&")[0].split("=")[0] for link in limited["links"]]
    assert ours == theirs == ["limit", "limit"]


def test_single_event_tokens_and_404_match_recordings(sim: Sim) -> None:
    ids = sim.script([{"type": "districts.updated"}])
    one = sim.http.get(f"/v3.1/events/{ids[0]}", headers=sim.auth()).json()
    rec_one = recorded("event.json")["response"]["body"]
    assert set(one) == set(rec_one)
    assert set(one["data"]) == set(rec_one["data"])
    assert _rel(one["links"]) == _rel(rec_one["links"])

    rec_tokens = recorded("tokens.json")["response"]
    creds = ("sim-client-id", "sim-client-secret")
    r = sim.http.get("/oauth/tokens?owner_type=district", auth=creds)
    assert r.headers["content-type"] == rec_tokens["headers"]["content-type"]
    tokens = r.json()
    assert set(tokens) == set(rec_tokens["body"])
    assert tokens["links"] == rec_tokens["body"]["links"]
    for ours, theirs in zip(tokens["data"], rec_tokens["body"]["data"], strict=False):
        assert set(ours) == set(theirs)
        assert set(ours["owner"]) == set(theirs["owner"])
        assert ours["scopes"] == theirs["scopes"]

    rec_404 = recorded("resources_student.json")["response"]
    r404 = sim.http.get("/v3.0/resources", headers=sim.auth())
    assert r404.status_code == rec_404["status"] == 404
    assert r404.text == rec_404["body"]
    assert r404.headers["content-type"] == rec_404["headers"]["content-type"]
    assert {h for h in rec_404["headers"] if h.startswith("x-")} <= set(r404.headers)
    assert "clever-request-id" not in r404.headers


@pytest.mark.parametrize("name", ["events.json", "events_next-2.json"])
def test_recorded_events_validate_the_same_way(name: str) -> None:
    """The checks above, applied to real Clever events, pass: they test the right thing."""
    body = recorded(name)["response"]["body"]
    validator("EventsResponse").validate(body)
    for item in body["data"]:
        event = item["data"]
        validator(event["type"]).validate(event)
        assert "previous_attributes" not in event
        record_schema = RECORD_SCHEMAS[event["type"].split(".")[0]]
        if event["type"].endswith(".updated"):
            validator(record_schema).validate(event["data"]["previous_attributes"])
        else:
            assert "previous_attributes" not in event["data"]


def test_spec_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    validate(yaml.safe_load(OPENAPI.read_text()))
    json.dumps(registry().contents(SPEC_URI))  # the converted spec is plain JSON
