"""Matching contract: record types, actions, districts and before/after schools."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.fanout.matching import (
    ACTIONS,
    EVENT_TYPES,
    RECORD_TYPES,
    Facts,
    Filter,
    record_roles,
    record_schools,
    split_type,
)

RECORDED = Path("/work/shared/clever-recorded")
DISTRICT = "58da8a43cc70ab00017a1a87"
SCHOOL_A = "58da8c58155b940248000007"
SCHOOL_B = "58da8c58155b940248000008"
SCHOOL_C = "58da8c58155b94024800000c"


def _recorded_events(name: str) -> list[dict[str, Any]]:
    path = RECORDED / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    body = json.loads(path.read_text())["response"]["body"]
    return [item["data"] for item in body["data"]]


def _event(
    event_type: str, obj: dict[str, Any], prev: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if prev is not None:
        data["previous_attributes"] = prev
    return {
        "id": "64206e4531f12f05cc490fa5",
        "type": event_type,
        "created": "2023-03-26T16:09:41.000Z",
        "data": data,
    }


def _student(*schools: str) -> dict[str, Any]:
    return {
        "id": "58da8c63d7dc0ca0680003ee",
        "district": DISTRICT,
        "roles": {"student": {"school": schools[0], "schools": list(schools), "grade": "9"}},
    }


def _hand_written() -> list[tuple[str, dict[str, Any], frozenset[str]]]:
    """(label, event, expected schools) for all 21 types plus the interesting user shapes."""
    cases: list[tuple[str, dict[str, Any], frozenset[str]]] = []
    for action in ACTIONS:
        moved = action == "updated"
        prev_user = {"roles": {"student": {"school": SCHOOL_A, "schools": [SCHOOL_A]}}}
        cases.append(
            (
                f"users.{action} student",
                _event(f"users.{action}", _student(SCHOOL_B), prev_user if moved else None),
                frozenset({SCHOOL_A, SCHOOL_B}) if moved else frozenset({SCHOOL_B}),
            )
        )
        section = {"id": "sec1", "district": DISTRICT, "school": SCHOOL_B, "course": "c1"}
        cases.append(
            (
                f"sections.{action}",
                _event(f"sections.{action}", section, {"school": SCHOOL_A} if moved else None),
                frozenset({SCHOOL_A, SCHOOL_B}) if moved else frozenset({SCHOOL_B}),
            )
        )
        school = {"id": SCHOOL_C, "district": DISTRICT, "name": "Pineapple Elementary School"}
        cases.append(
            (
                f"schools.{action}",
                _event(f"schools.{action}", school, {"name": "Old"} if moved else None),
                frozenset({SCHOOL_C}),
            )
        )
        others: list[tuple[str, dict[str, Any]]] = [
            ("courses", {"id": "c1", "district": DISTRICT, "name": "Algebra"}),
            ("terms", {"id": "t1", "district": DISTRICT, "name": "Fall"}),
            ("districts", {"id": DISTRICT, "name": "#DEMO"}),
            ("resources", {"id": "r1", "title": "Book", "roles": ["student"]}),
        ]
        for record_type, obj in others:
            cases.append(
                (
                    f"{record_type}.{action}",
                    _event(f"{record_type}.{action}", obj, {"name": "x"} if moved else None),
                    frozenset(),
                )
            )
    contact = {
        "id": "u9",
        "district": DISTRICT,
        "roles": {"contact": {"student_relationships": [{"student": "u1", "type": "Parent"}]}},
    }
    cases.append(("users.created contact", _event("users.created", contact), frozenset()))
    admin = {"id": "u8", "district": DISTRICT, "roles": {"district_admin": {"title": "IT"}}}
    cases.append(("users.updated district admin", _event("users.updated", admin, {}), frozenset()))
    teacher = {
        "id": "u7",
        "roles": {
            "teacher": {"school": SCHOOL_A, "schools": [SCHOOL_A, SCHOOL_C]},
            "staff": {"schools": [SCHOOL_B]},
        },
    }
    cases.append(
        (
            "users.updated teacher+staff, staff role removed",
            _event("users.updated", teacher, {"roles": {"staff": {"schools": ["s-old"]}}}),
            frozenset({SCHOOL_A, SCHOOL_B, SCHOOL_C, "s-old"}),
        )
    )
    return cases


HAND_WRITTEN = _hand_written()


def test_the_21_types() -> None:
    assert len(EVENT_TYPES) == 21
    assert {split_type(t) for t in EVENT_TYPES} == {(r, a) for r in RECORD_TYPES for a in ACTIONS}
    assert {e["type"] for _, e, _ in HAND_WRITTEN} == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("label", "event", "expected"), HAND_WRITTEN, ids=[c[0] for c in HAND_WRITTEN]
)
def test_record_schools_hand_written(
    label: str, event: dict[str, Any], expected: frozenset[str]
) -> None:
    assert record_schools(event) == expected
    assert bool(record_schools(event)) == bool(expected)


@pytest.mark.parametrize(
    ("label", "event", "expected"), HAND_WRITTEN, ids=[c[0] for c in HAND_WRITTEN]
)
def test_filters_on_hand_written(
    label: str, event: dict[str, Any], expected: frozenset[str]
) -> None:
    record_type, action = event["type"].split(".")
    assert Filter().matches(event, DISTRICT)
    assert Filter(record_types=frozenset({record_type})).matches(event, DISTRICT)
    other_types = frozenset(RECORD_TYPES) - {record_type}
    assert not Filter(record_types=other_types).matches(event, DISTRICT)
    assert Filter(actions=frozenset({action})).matches(event, DISTRICT)
    assert not Filter(actions=frozenset(ACTIONS) - {action}).matches(event, DISTRICT)
    assert Filter(districts=frozenset({DISTRICT})).matches(event, DISTRICT)
    assert not Filter(districts=frozenset({"another"})).matches(event, DISTRICT)
    unrelated = Filter(schools=frozenset({"not-a-school-of-anything"}))
    # A school-less record passes any school filter; a record with schools needs an overlap.
    assert unrelated.matches(event, DISTRICT) == (not expected)
    for school in expected:
        assert Filter(schools=frozenset({school})).matches(event, DISTRICT)


def test_student_moved_from_a_to_b_reaches_a_and_b_not_c() -> None:
    event = _event(
        "users.updated",
        _student(SCHOOL_B),
        {"roles": {"student": {"school": SCHOOL_A, "schools": [SCHOOL_A]}}},
    )
    assert Filter(schools=frozenset({SCHOOL_A})).matches(event, DISTRICT)
    assert Filter(schools=frozenset({SCHOOL_B})).matches(event, DISTRICT)
    assert not Filter(schools=frozenset({SCHOOL_C})).matches(event, DISTRICT)
    both = Filter(
        record_types=frozenset({"users"}),
        actions=frozenset({"updated"}),
        districts=frozenset({DISTRICT}),
        schools=frozenset({SCHOOL_A}),
    )
    assert both.matches(event, DISTRICT)
    assert not both.matches(event, "another-district")


def test_recorded_events_first_page() -> None:
    events = _recorded_events("events.json")
    assert {e["type"] for e in events} == {
        "districts.updated",
        "schools.updated",
        "users.updated",
        "users.created",
    }
    for event in events:
        record_type = event["type"].split(".")[0]
        schools = record_schools(event)
        if record_type == "districts":
            assert schools == frozenset()
            assert Filter(schools=frozenset({SCHOOL_A})).matches(event, DISTRICT)
        elif record_type == "schools":
            assert schools == {event["data"]["object"]["id"]}
        else:
            for role in event["data"]["object"]["roles"].values():
                assert set(role.get("schools", [])) <= schools
                if "school" in role:
                    assert role["school"] in schools
        assert Filter().matches(event, DISTRICT)


def test_recorded_schools_change_reaches_old_and_new_schools() -> None:
    events = {e["id"]: e for e in _recorded_events("events.json")}
    julia = events["64206e4531f12f05cc490fa7"]  # schools [A] -> [A, B]
    assert julia["data"]["previous_attributes"]["roles"]["student"]["schools"] == [SCHOOL_A]
    assert record_schools(julia) == {SCHOOL_A, SCHOOL_B}
    school = events["64206e4431f12f05cc490775"]
    assert record_schools(school) == {SCHOOL_A}
    assert not Filter(schools=frozenset({SCHOOL_B})).matches(school, DISTRICT)


def test_recorded_events_second_page_previous_attributes_are_read() -> None:
    events = _recorded_events("events_next-2.json")
    assert all("previous_attributes" in e["data"] for e in events)
    for event in events:
        before = event["data"]["previous_attributes"].get("roles", {})
        for role in before.values():
            for school in [role.get("school"), *role.get("schools", [])]:
                if school:
                    assert school in record_schools(event)
                    assert Filter(schools=frozenset({school})).matches(event, DISTRICT)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": None},
        {"type": 7, "data": []},
        {"type": "users.updated"},
        {"type": "users.updated", "data": None},
        {"type": "users.updated", "data": {"object": []}},
        {"type": "users.updated", "data": {"object": {"roles": ["student"]}}},
        {"type": "users.updated", "data": {"object": {"roles": {"student": "x"}}}},
        {
            "type": "users.updated",
            "data": {"object": {"roles": {"s": {"school": 5, "schools": "A"}}}},
        },
        {
            "type": "users.updated",
            "data": {"object": {"roles": {"s": {"schools": [1, None, "A"]}}}},
        },
        {"type": "sections.updated", "data": {"object": {"school": {"id": "x"}}}},
        {"type": "schools.created", "data": {"object": {"id": None}}},
        {"type": "users", "data": {"previous_attributes": "nope"}},
        {"type": "users.updated", "data": {"object": {}, "previous_attributes": {"roles": None}}},
    ],
)
def test_malformed_shapes_never_raise(event: dict[str, Any]) -> None:
    schools = record_schools(event)
    assert schools <= {"A"}
    Filter(schools=frozenset({"A"})).matches(event, DISTRICT)
    Filter(record_types=frozenset({"users"}), actions=frozenset({"updated"})).matches(event, "")


def test_non_mapping_event_never_matches_or_raises() -> None:
    assert record_schools([]) == frozenset()  # type: ignore[arg-type]
    assert not Filter().matches("junk", DISTRICT)  # type: ignore[arg-type]


def test_matches_facts_agrees_with_matches() -> None:
    for _, event, _ in HAND_WRITTEN:
        record_type, action = split_type(event["type"])
        for f in [
            Filter(),
            Filter(schools=frozenset({SCHOOL_A})),
            Filter(actions=frozenset({"created"})),
        ]:
            facts = Facts(
                record_type,
                action,
                DISTRICT,
                record_schools(event),
                record_roles(event),
                event["data"].get("previous_attributes", {}),
            )
            assert f.matches(event, DISTRICT) == f.matches_facts(facts)


# ---- properties -------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
school_ids = st.sampled_from(["s1", "s2", "s3", "s4", "s5"])
roles = st.dictionaries(
    st.sampled_from(["student", "teacher", "staff", "district_admin", "contact"]),
    st.fixed_dictionaries(
        {},
        optional={"school": school_ids, "schools": st.lists(school_ids, max_size=3)},
    ),
    max_size=3,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    record_type = event_type.split(".")[0]
    obj: dict[str, Any] = {"id": draw(school_ids) if record_type == "schools" else "r1"}
    prev: dict[str, Any] | None = None
    if record_type == "users":
        obj["roles"] = draw(roles)
        if draw(st.booleans()):
            prev = {"roles": draw(roles)}
    elif record_type == "sections":
        obj["school"] = draw(school_ids)
        if draw(st.booleans()):
            prev = {"school": draw(school_ids)}
    if draw(st.booleans()):
        obj["extra"] = draw(json_values)
    return _event(event_type, obj, prev)


filters = st.builds(
    Filter,
    record_types=st.frozensets(st.sampled_from(RECORD_TYPES), max_size=3),
    actions=st.frozensets(st.sampled_from(ACTIONS), max_size=2),
    districts=st.frozensets(st.sampled_from(["d1", "d2"]), max_size=2),
    schools=st.frozensets(school_ids, max_size=3),
)
districts = st.sampled_from(["d1", "d2", "d3"])


@given(events() | json_values, districts)
def test_empty_filter_matches_every_event(event: Any, district: str) -> None:
    assert Filter().matches(event, district) == isinstance(event, dict)


@given(events(), filters, school_ids, districts)
def test_adding_a_school_never_unmatches(
    event: dict[str, Any], f: Filter, extra: str, d: str
) -> None:
    if f.schools and f.matches(event, d):
        wider = Filter(f.record_types, f.actions, f.districts, f.schools | {extra})
        assert wider.matches(event, d)


@given(events(), districts)
def test_any_before_or_after_school_matches_its_filter(event: dict[str, Any], d: str) -> None:
    for school in record_schools(event):
        assert Filter(schools=frozenset({school})).matches(event, d)


@given(events(), st.frozensets(school_ids, min_size=1), districts)
def test_school_less_records_pass_school_filters(
    event: dict[str, Any], schools: frozenset[str], d: str
) -> None:
    if not record_schools(event):
        assert Filter(schools=schools).matches(event, d)


@given(events(), filters, districts)
def test_match_is_the_conjunction_of_dimensions(event: dict[str, Any], f: Filter, d: str) -> None:
    record_type, action = event["type"].split(".")
    schools = record_schools(event)
    expected = (
        (not f.record_types or record_type in f.record_types)
        and (not f.actions or action in f.actions)
        and (not f.districts or d in f.districts)
        and (not f.schools or not schools or bool(f.schools & schools))
    )
    assert f.matches(event, d) == expected


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["id", "type", "created", "data"]),
        json_values | st.sampled_from(EVENT_TYPES),
    ),
    st.dictionaries(st.sampled_from(["object", "previous_attributes"]), json_values),
    filters,
)
def test_never_raises_on_json_ish_data(
    event: dict[str, Any], data: dict[str, Any], f: Filter
) -> None:
    variants = [event, {**event, "data": data}]
    if isinstance(data.get("object"), dict):
        variants.append({**event, "data": {"object": {"roles": data["object"]}}})
    for variant in variants:
        schools = record_schools(copy.deepcopy(variant))
        assert all(isinstance(s, str) and s for s in schools)
        f.matches(variant, "d1")
