"""A sync's ``previous_attributes``: nested for objects, whole for arrays and scalars, null
for a key the record did not have (as Clever writes them, ``clever-notes.md``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from relay.delivery.signing import webhook_body
from relay.fanout.matching import Facts
from relay.roster.diff import previous_attributes, synthetic


def test_changed_leaves_nested_arrays_whole_and_new_keys_null() -> None:
    old = {
        "id": "u1",
        "name": {"first": "Ada", "last": "Lovelace"},
        "roles": {"student": {"school": "s1", "schools": ["s1"], "grade": "5"}},
        "email": "a@example.org",
    }
    new = {
        "id": "u1",
        "name": {"first": "Ada", "last": "King"},
        "roles": {"student": {"school": "s2", "schools": ["s2", "s1"], "grade": "5"}},
        "sis_id": "42",
    }
    assert previous_attributes(old, new) == {
        "name": {"last": "Lovelace"},
        "roles": {"student": {"school": "s1", "schools": ["s1"]}},
        "email": "a@example.org",  # gone from the record: its old value
        "sis_id": None,  # new: it was absent
    }


def test_an_object_that_became_a_scalar_comes_whole() -> None:
    assert previous_attributes({"ext": {"a": 1}}, {"ext": None}) == {"ext": {"a": 1}}
    assert previous_attributes({"a": 1}, {"a": 1}) == {}


def test_a_synthetic_event_has_clevers_shape_plus_district_and_source() -> None:
    now = datetime(2026, 12, 7, 21, 30, 5, 123456, tzinfo=UTC)
    record = {"id": "u1", "roles": {"student": {"school": "s2"}}}
    prepared = synthetic(
        "users", "updated", record, {"roles": {"student": {"school": "s1"}}}, "d1", now, "sync"
    )
    body = json.loads(prepared.body)
    assert list(body) == ["id", "type", "created", "data", "district", "source"]
    assert body["type"] == "users.updated"
    assert body["created"] == "2026-12-07T21:30:05.000Z"
    assert body["data"]["previous_attributes"] == {"roles": {"student": {"school": "s1"}}}
    assert body["district"] == "d1"
    assert body["source"] == "sync"
    assert len(body["id"]) == 24
    assert body["id"][:8] == f"{int(now.timestamp()):08x}"
    assert prepared.event.record_id == "u1"
    assert prepared.facts == Facts.of(body, "d1")  # matched on both schools, as Clever's
    assert prepared.facts.schools == frozenset({"s1", "s2"})
    created = json.loads(synthetic("users", "created", record, None, "d1", now, "sync").body)
    assert "previous_attributes" not in created["data"]


def test_the_body_is_webhook_bodys_also_for_text_utf8_cannot_carry() -> None:
    now = datetime(2026, 12, 7, 21, 30, 5, tzinfo=UTC)
    for name in ("Zoë", "\ud800 lone"):  # a lone surrogate: JSON allows it, UTF-8 does not
        record = {"id": "u1", "name": {"first": name}}
        prepared = synthetic("users", "updated", record, {"name": None}, "d1", now, "sync")
        expected = webhook_body(prepared.event.raw, "d1", "sync").decode()
        assert prepared.body == expected
        prepared.body.encode()  # always valid UTF-8 for the receiver
