"""The roster filters: ``roles`` (who the user is, before or after the change) and
``changed`` (what an update changed), checked against oracles written apart from the code,
as hypothesis properties and on real recorded Clever events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.fanout.matching import (
    ACTIONS,
    EVENT_TYPES,
    ROLES,
    Facts,
    Filter,
    parse_path,
)
from tests.support.simulator import RECORDED

FIELDS = ["name", "email", "roles", "school", "schools", "teachers", "grade", "ext"]
paths = st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3).map(".".join)
leaves = st.none() | st.booleans() | st.integers(0, 9) | st.text(max_size=4)
nested = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS), children, max_size=3)
    ),
    max_leaves=10,
)
role_maps = st.dictionaries(
    st.sampled_from(ROLES), st.dictionaries(st.sampled_from(FIELDS), leaves)
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    data: dict[str, Any] = {"object": {"id": "r1"}}
    if event_type.startswith("users."):
        data["object"]["roles"] = draw(role_maps)
    if event_type.endswith(".updated") and draw(st.booleans()):
        prev = draw(st.dictionaries(st.sampled_from(FIELDS), nested, max_size=3))
        if event_type.startswith("users.") and draw(st.booleans()):
            prev["roles"] = draw(role_maps)
        data["previous_attributes"] = prev
    return {"id": "64206e4531f12f05cc490fa5", "type": event_type, "data": data}


def holds(previous: Any, path: str) -> bool:
    """Oracle: walk ``path`` through nested dicts."""
    node = previous
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def roles_of(event: dict[str, Any]) -> set[str]:
    """Oracle: role keys after and before (``roles`` that is not an object, such as a
    ``previous_attributes.roles`` of null, holds none)."""
    data = event["data"]
    after = data["object"].get("roles")
    before = data.get("previous_attributes", {}).get("roles")
    return {key for roles in (after, before) if isinstance(roles, dict) for key in roles}


@given(events(), st.frozensets(st.sampled_from(ROLES), min_size=1))
@example(  # roles that were null before: none held then (a generated case once hit)
    {
        "id": "64206e4531f12f05cc490fa5",
        "type": "users.updated",
        "data": {"object": {"id": "r1", "roles": {}}, "previous_attributes": {"roles": None}},
    },
    frozenset({"student"}),
)
def test_roles_pass_users_holding_one_before_or_after_and_every_other_type(
    event: dict[str, Any], roles: frozenset[str]
) -> None:
    expected = not event["type"].startswith("users.") or bool(roles & roles_of(event))
    assert Filter(roles=roles).matches(event, "d1") == expected


@given(events(), st.lists(paths, min_size=1, max_size=3))
def test_changed_passes_updates_holding_a_path_and_every_create_or_delete(
    event: dict[str, Any], changed: list[str]
) -> None:
    previous = event["data"].get("previous_attributes", {})
    expected = not event["type"].endswith(".updated") or any(holds(previous, p) for p in changed)
    f = Filter(changed=Filter.changed_paths(changed))
    assert f.matches(event, "d1") == expected


@settings(max_examples=200)
@given(
    events(),
    st.frozensets(st.sampled_from(ROLES), max_size=2),
    st.lists(paths, max_size=2),
    st.frozensets(st.sampled_from(ACTIONS), max_size=2),
)
def test_precomputed_facts_agree_with_the_event(
    event: dict[str, Any], roles: frozenset[str], changed: list[str], actions: frozenset[str]
) -> None:
    f = Filter(actions=actions, roles=roles, changed=Filter.changed_paths(changed))
    assert f.matches_facts(Facts.of(event, "d1")) == f.matches(event, "d1")


@given(events(), paths, st.sampled_from(FIELDS))
def test_a_path_holds_whatever_lies_below_it(event: dict[str, Any], path: str, below: str) -> None:
    deeper = Filter(changed=Filter.changed_paths([f"{path}.{below}"]))
    wider = Filter(changed=Filter.changed_paths([path]))
    if deeper.matches(event, "d1"):
        assert wider.matches(event, "d1")


@pytest.mark.parametrize("bad", ["", ".", "roles.", ".roles", "roles..student", "a b", "1st"])
def test_malformed_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a dotted field path"):
        parse_path(bad)


def _recorded() -> list[dict[str, Any]]:
    events = []
    for name in ("events.json", "events_next-2.json"):
        path = RECORDED / name
        if not path.exists():
            pytest.skip(f"{path} not available")
        events += [
            item["data"] for item in json.loads(path.read_text())["response"]["body"]["data"]
        ]
    return events


def test_on_recorded_clever_events() -> None:
    events = _recorded()
    teachers = Filter(record_types=frozenset({"users"}), roles=frozenset({"teacher"}))
    got = {e["id"] for e in events if teachers.matches(e, "d1")}
    assert got == {
        e["id"] for e in events if e["type"].startswith("users.") and "teacher" in roles_of(e)
    }
    assert got  # the recording has teachers
    for path in ("roles", "roles.student", "name", "ext", "last_sync"):
        f = Filter(changed=Filter.changed_paths([path]))
        got = {e["id"] for e in events if f.matches(e, "d1")}
        expected = {
            e["id"]
            for e in events
            if not e["type"].endswith(".updated")
            or holds(e["data"].get("previous_attributes", {}), path)
        }
        assert got == expected, path
    # the recording has updates both with and without a name change, so "name" selects
    changes = [e["data"].get("previous_attributes", {}) for e in events]
    assert any("name" in p for p in changes)
    assert any(p and "name" not in p for p in changes)
