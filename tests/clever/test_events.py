"""Parsing against Clever's real recorded responses, and strict refusal of anything else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay._exceptions import CleverBadBody
from relay.clever.events import (
    CleverEvent,
    EventsPage,
    is_valid_event_id,
    object_id_time,
    parse_event,
    parse_event_object,
    parse_events_page,
    safe_excerpt,
)
from relay.clever.ratelimit import RateLimit

RECORDED = Path("/work/shared/clever-recorded")
LIST_FILES = [
    "events.json",
    "events_with_limit.json",
    "events_with_starting_after.json",
    "events_next.json",
    "events_next-2.json",
]


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return data


def body_bytes(name: str) -> bytes:
    return json.dumps(recorded(name)["response"]["body"]).encode()


def test_every_recorded_file_is_covered() -> None:
    assert {p.name for p in RECORDED.glob("*.json")} == {
        *LIST_FILES,
        "event.json",
        "tokens.json",
        "resources_student.json",
    }


@pytest.mark.parametrize("name", LIST_FILES)
def test_recorded_pages_parse_completely(name: str) -> None:
    rec = recorded(name)
    items = rec["response"]["body"]["data"]
    headers = rec["response"]["headers"]
    page = parse_events_page(
        body_bytes(name),
        rate_limit=RateLimit.from_headers(headers),
        request_id=headers["clever-request-id"],
    )
    assert len(page.events) == len(items)
    ids = [e.id for e in page.events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert page.last_id == ids[-1]
    assert page.request_id == headers["clever-request-id"]
    assert page.rate_limit == RateLimit(
        limit=1200,
        remaining=int(headers["x-ratelimit-remaining"]),
        reset_at=float(headers["x-ratelimit-reset"]),
        bucket="bearer",
    )
    for event, item in zip(page.events, items, strict=True):
        # raw is the event exactly as received: every field, nothing added or moved.
        assert event.raw == item["data"]
        assert event.id == item["data"]["id"]
        assert event.type == f"{event.record_type}.{event.action}"
        assert event.record_id == item["data"]["data"]["object"]["id"]
        assert event.created == object_id_time(event.id)
        assert event.created.tzinfo is UTC
        if event.action == "updated":
            assert event.raw["data"]["previous_attributes"]
        else:
            assert "previous_attributes" not in event.raw["data"]
        assert "previous_attributes" not in event.raw


def test_first_page_content() -> None:
    page = parse_events_page(body_bytes("events.json"))
    assert len(page.events) == 100
    types = {e.type for e in page.events}
    assert types <= {"districts.updated", "schools.updated", "users.updated", "users.created"}
    assert sum(e.type == "users.created" for e in page.events) == 6
    assert page.events[0].id == "64206e4431f12f05cc49076f"
    assert page.events[0].created == datetime(2023, 3, 26, 16, 9, 40, tzinfo=UTC)
    assert page.events[-1].id == "64206e4531f12f05cc490ffd"


def test_previous_attributes_kept_untouched_under_data() -> None:
    page = parse_events_page(body_bytes("events.json"))
    first = page.events[0]
    assert first.raw["data"]["previous_attributes"] == {"last_sync": "2023-03-23T16:08:33.459Z"}
    second = parse_events_page(body_bytes("events_next-2.json"))
    (gerlach,) = [e for e in second.events if e.id == "64206e4531f12f05cc491060"]
    assert gerlach.raw["data"]["previous_attributes"] == {
        "name": {"first": "7", "last": "Gerlach", "middle": "K"},
        "roles": {
            "student": {
                "ext": {"gifted_status": ""},
                "gender": "X",
                "schools": ["58da8c58155b940248000007"],
            }
        },
    }


def test_second_page_continues_after_first() -> None:
    first = parse_events_page(body_bytes("events.json"))
    second = parse_events_page(body_bytes("events_next-2.json"))
    assert first.last_id is not None
    assert all(e.id > first.last_id for e in second.events)
    assert {e.type for e in second.events} == {"users.updated"}


def test_expired_cursor_page_is_the_oldest_page() -> None:
    expired = parse_events_page(body_bytes("events_with_starting_after.json"))
    oldest = parse_events_page(body_bytes("events.json"))
    assert [e.id for e in expired.events] == [e.id for e in oldest.events]
    assert object_id_time("640df950d306111b2385f72b") < expired.events[0].created


def test_single_event() -> None:
    event = parse_event(body_bytes("event.json"))
    first = parse_events_page(body_bytes("events.json")).events[0]
    assert event == first
    assert event.raw == first.raw
    assert event.type == "districts.updated"
    assert event.record_type == "districts"
    assert event.action == "updated"
    assert event.record_id == "58da8a43cc70ab00017a1a87"


def test_event_repr_hides_raw() -> None:
    event = parse_event(body_bytes("event.json"))
    assert "Amelie" not in repr(event)


def test_empty_page() -> None:
    page = parse_events_page(b'{"data": [], "links": []}')
    assert page == EventsPage(events=[])
    assert page.last_id is None


def test_last_id_never_moves_backwards() -> None:
    def ev(eid: str) -> dict[str, Any]:
        return {"data": {"id": eid, "type": "users.updated", "data": {"object": {"id": "x"}}}}

    body = json.dumps({"data": [ev("b" * 24), ev("a" * 24)]})
    assert parse_events_page(body).last_id == "b" * 24


def test_created_falls_back_to_id_time_and_is_utc() -> None:
    base = {"id": "64206e4431f12f05cc49076f", "type": "users.deleted"}
    data = {"object": {"id": "u1"}}
    no_created = parse_event_object({**base, "data": data})
    assert no_created.created == datetime(2023, 3, 26, 16, 9, 40, tzinfo=UTC)
    garbage = parse_event_object({**base, "created": "yesterday", "data": data})
    assert garbage.created == no_created.created
    offset = parse_event_object({**base, "created": "2023-03-26T18:09:40+02:00", "data": data})
    assert offset.created == no_created.created
    assert offset.created.utcoffset() is not None


STUDENT = {"id": "58da8c63d7dc0ca0680003ee", "name": {"first": "Secretname"}}


def page_of(event: object) -> bytes:
    return json.dumps({"data": [{"data": event, "uri": "/v3.1/events/x"}]}).encode()


def good_event(**overrides: object) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "64206e4431f12f05cc49076f",
        "type": "users.updated",
        "created": "2023-03-26T16:09:40.000Z",
        "data": {"object": STUDENT, "previous_attributes": {"name": {"first": "Old"}}},
    }
    event.update(overrides)
    return event


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<!DOCTYPE html><html><body><pre>oops</pre></body></html>", id="html"),
        pytest.param(b"Service Unavailable", id="plain-text"),
        pytest.param(b'{"data": [{"data": {"id": "6420', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b"[]", id="top-level-list"),
        pytest.param(b'{"links": []}', id="no-data"),
        pytest.param(b'{"data": {}}', id="data-not-list"),
        pytest.param(b'{"data": ["x"]}', id="item-not-object"),
        pytest.param(b'{"data": [{"uri": "/v3.1/events/x"}]}', id="item-without-event"),
        pytest.param(page_of(good_event(id="64206e44")), id="short-id"),
        pytest.param(page_of(good_event(id="64206E4431F12F05CC49076F")), id="uppercase-id"),
        pytest.param(page_of(good_event(id=12345)), id="numeric-id"),
        pytest.param(page_of({k: v for k, v in good_event().items() if k != "id"}), id="no-id"),
        pytest.param(page_of(good_event(type="users")), id="type-no-action"),
        pytest.param(page_of(good_event(type="Users.Updated")), id="type-case"),
        pytest.param(page_of(good_event(type=None)), id="type-null"),
        pytest.param(page_of(good_event(data={"object": {"name": "x"}})), id="no-object-id"),
        pytest.param(page_of(good_event(data={"object": "x"})), id="object-not-dict"),
        pytest.param(page_of(good_event(data=None)), id="no-data-object"),
        pytest.param(page_of(good_event(data={"object": {"id": ""}})), id="empty-object-id"),
    ],
)
def test_bad_pages_are_refused(body: bytes) -> None:
    with pytest.raises(CleverBadBody) as info:
        parse_events_page(body, request_id="req-1")
    message = str(info.value)
    assert len(message) < 300
    assert "Secretname" not in message
    assert "\n" not in message
    assert info.value.request_id == "req-1"
    assert len(info.value.body_excerpt) <= 200


def test_bad_body_excerpt_is_clean_and_short() -> None:
    body = (
        "<html><head><style>p{}</style></head><body><h1>Bad   Gateway</h1>" + "x" * 500
    ).encode()
    with pytest.raises(CleverBadBody) as info:
        parse_events_page(body)
    excerpt = info.value.body_excerpt
    assert excerpt.startswith("Bad Gateway")
    assert "<" not in excerpt
    assert "p{}" not in excerpt
    assert len(excerpt) <= 200


def test_truncated_json_excerpt_is_short_and_says_where() -> None:
    whole = body_bytes("events.json")
    cut = whole[: len(whole) // 2]
    with pytest.raises(CleverBadBody) as info:
        parse_events_page(cut)
    assert f"of {len(cut)}" in str(info.value)
    assert len(info.value.body_excerpt) <= 40
    assert "Amelie" not in str(info.value)  # student/contact data stays out of logs


def test_bad_single_event_is_refused() -> None:
    with pytest.raises(CleverBadBody):
        parse_event(b'{"data": [], "links": []}')
    with pytest.raises(CleverBadBody):
        parse_event(page_of(good_event()))  # a list page is not a single event


def test_redaction_in_bad_body() -> None:
    with pytest.raises(CleverBadBody) as info:
        parse_events_page(b"denied for tok_abc123", redact=("tok_abc123",))
    assert "tok_abc123" not in str(info.value)
    assert "[redacted]" in info.value.body_excerpt


def test_safe_excerpt() -> None:
    assert safe_excerpt(b"") == ""
    assert safe_excerpt("a\r\n\tb\x00c") == "a b c"
    assert safe_excerpt("<pre>Cannot GET /v3.0/resources</pre>") == "Cannot GET /v3.0/resources"
    assert safe_excerpt("&lt;not a tag&gt;") == "&lt;not a tag&gt;"
    assert safe_excerpt("<b>a &amp; b</b>") == "a & b"
    long = safe_excerpt("y" * 1000)
    assert len(long) == 200
    assert long.endswith("...")
    # redaction happens before cutting: no half token at the edge
    assert "tok_" not in safe_excerpt("x" * 195 + "tok_secret", redact=["tok_secret"])


def test_object_id_time() -> None:
    assert object_id_time("64206e4431f12f05cc49076f") == datetime(
        2023, 3, 26, 16, 9, 40, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="not a Clever event id"):
        object_id_time("nope")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("64206e4431f12f05cc49076f", True),
        ("0" * 24, True),
        ("64206e4431f12f05cc49076", False),
        ("64206e4431f12f05cc49076f0", False),
        ("64206e4431f12f05cc49076g", False),
        ("64206E4431F12F05CC49076F", False),
        ("64206e4431f12f05cc49076f\n", False),
        ("", False),
        (None, False),
        (0x64206E4431F12F05CC49076F, False),
    ],
)
def test_is_valid_event_id(value: object, valid: bool) -> None:
    assert is_valid_event_id(value) is valid


@given(st.integers(min_value=0, max_value=2**32 - 1), st.binary(min_size=8, max_size=8))
def test_object_id_time_round_trip(seconds: int, tail: bytes) -> None:
    event_id = f"{seconds:08x}{tail.hex()}"
    assert is_valid_event_id(event_id)
    assert object_id_time(event_id).timestamp() == seconds


def test_event_is_frozen() -> None:
    event = parse_event(body_bytes("event.json"))
    assert isinstance(event, CleverEvent)
    with pytest.raises(AttributeError):
        event.id = "x"  # type: ignore[misc]
