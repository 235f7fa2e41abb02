"""The roster follows every stored event, in the page's transaction: created/updated set the
object, deleted removes it, the last event of a record in a page wins, and an event stored
before (a page fetched twice) changes nothing again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from relay.clever.events import CleverEvent
from relay.db import Database
from relay.db.models import District, Record
from relay.polling.store import store_page
from tests.support.roster import roster_records

T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


class Events:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, type_: str, obj: dict[str, Any], **data: Any) -> CleverEvent:
        self.n += 1
        event_id = f"{T0 + self.n:08x}{self.n:016x}"
        raw = {"id": event_id, "type": type_, "data": {"object": obj, **data}}
        return CleverEvent(event_id, type_, datetime.fromtimestamp(T0 + self.n, UTC), raw)


async def store(db: Database, events: list[CleverEvent], cursor: str | None) -> str | None:
    await store_page(
        db,
        district_id="d",
        lease_owner="A",
        expected_cursor=cursor,
        events=events,
        caught_up=True,
        lease_seconds=5,
    )
    return max(e.id for e in events)


async def test_every_stored_event_sets_or_removes_its_record(db: Database) -> None:
    async with db.write() as session:
        session.add(District(id="d", token="t", lease_owner="A"))
    event = Events()
    student = {"id": "u1", "roles": {"student": {"school": "s1"}}, "name": {"first": "A"}}
    moved = {"id": "u1", "roles": {"student": {"school": "s2"}}, "name": {"first": "A"}}
    first = [
        event("users.created", student),
        event("schools.created", {"id": "s1", "name": "One"}),
        event("sections.created", {"id": "c1", "school": "s1"}),
    ]
    cursor = await store(db, first, None)
    assert await roster_records(db, "d") == {
        ("users", "u1"): student,
        ("schools", "s1"): {"id": "s1", "name": "One"},
        ("sections", "c1"): {"id": "c1", "school": "s1"},
    }
    # in one page: the record's last event wins; a delete removes
    second = [
        event("users.updated", moved, previous_attributes={"roles": {"student": {"school": "s1"}}}),
        event("sections.deleted", {"id": "c1", "school": "s1"}),
        event("sections.created", {"id": "c2", "school": "s2"}),
        event("sections.deleted", {"id": "c2", "school": "s2"}),
    ]
    cursor = await store(db, second, cursor)
    assert await roster_records(db, "d") == {
        ("users", "u1"): moved,
        ("schools", "s1"): {"id": "s1", "name": "One"},
    }
    # a page stored again (its events kept once) does not roll the roster back
    await store(db, [*first[:1], event("schools.updated", {"id": "s1", "name": "Uno"})], cursor)
    records = await roster_records(db, "d")
    assert records[("users", "u1")] == moved
    assert records[("schools", "s1")] == {"id": "s1", "name": "Uno"}


async def test_rows_keep_the_event_schools_and_roles_for_the_api_filters(db: Database) -> None:
    async with db.write() as session:
        session.add(District(id="d", token="t", lease_owner="A"))
    event = Events()
    teacher = {"id": "u2", "roles": {"teacher": {"school": "s1", "schools": ["s1", "s3"]}}}
    created = event("users.created", teacher)
    await store(db, [created], None)
    async with db.read() as session:
        row = await session.get(Record, ("d", "users", "u2"))
    assert row is not None
    assert row.event_id == created.id
    assert row.schools == " s1 s3 "
    assert row.roles == " teacher "
    assert json.loads(row.object) == teacher
