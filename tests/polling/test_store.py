"""``store_page``: events + deliveries + cursor in one transaction, only for the lease holder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func
from sqlmodel import select

from relay._exceptions import LeaseLost
from relay.clever.events import CleverEvent
from relay.db import Database
from relay.db.models import Delivery, District, DistrictStatus, Event, Subscription
from relay.polling.store import PageResult, store_page

T0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())


def events(start: int, count: int, type_: str = "users.updated") -> list[CleverEvent]:
    out = []
    for n in range(start, start + count):
        event_id = f"{T0 + n:08x}{n:016x}"
        raw = {"id": event_id, "type": type_, "data": {"object": {"id": f"u{n}"}}}
        out.append(CleverEvent(event_id, type_, datetime.fromtimestamp(T0 + n, UTC), raw))
    return out


async def setup(db: Database, **fields: object) -> None:
    async with db.write() as session:
        session.add(District(id="d", token="t", lease_owner="A", **fields))
        session.add(Subscription(id="sub_users", owner="o", url="http://x", secret="s"))
        session.add(
            Subscription(
                id="sub_terms", owner="o", url="http://x", secret="s", record_types=["terms"]
            )
        )


async def count(db: Database, model: type) -> int:
    async with db.read() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def get(db: Database) -> District:
    async with db.read() as session:
        district = await session.get(District, "d")
    assert district is not None
    return district


async def store(db: Database, batch: list[CleverEvent], **kw: object) -> PageResult:
    args: dict[str, object] = {
        "district_id": "d",
        "lease_owner": "A",
        "expected_cursor": None,
        "events": batch,
        "caught_up": False,
        "lease_seconds": 5,
    }
    return await store_page(db, **(args | kw))  # type: ignore[arg-type]


async def test_a_page_its_deliveries_and_the_cursor_commit_together(db: Database) -> None:
    await setup(db)
    first = events(0, 50)
    result = await store(db, first)
    assert result.stored == 50
    assert len(result.due) == 50  # users only match sub_users
    district = await get(db)
    assert district.cursor == first[-1].id
    assert district.last_event_at == first[-1].created
    assert district.caught_up is False
    assert district.caught_up_at is None

    second = events(50, 10)
    result = await store(db, second, expected_cursor=first[-1].id, caught_up=True)
    assert result.stored == 10
    district = await get(db)
    assert district.cursor == second[-1].id
    assert district.caught_up_at is not None
    assert await count(db, Event) == 60
    assert await count(db, Delivery) == 60


async def test_another_owner_or_a_moved_cursor_stores_nothing(db: Database) -> None:
    await setup(db)
    with pytest.raises(LeaseLost):
        await store(db, events(0, 5), lease_owner="B")
    await store(db, events(0, 5))
    with pytest.raises(LeaseLost):  # a stale page fetched from the old cursor
        await store(db, events(0, 5), expected_cursor=None)
    assert await count(db, Event) == 5
    assert await count(db, Delivery) == 5
    assert (await get(db)).cursor == events(0, 5)[-1].id


async def test_an_event_already_stored_gets_no_second_delivery(db: Database) -> None:
    await setup(db)
    batch = events(0, 5)
    await store(db, batch)
    async with db.write() as session:  # e.g. an operator rewound the cursor
        district = await session.get(District, "d")
        assert district is not None
        district.cursor = None
        session.add(district)
    result = await store(db, events(0, 8))
    assert result.stored == 3
    assert await count(db, Event) == 8
    assert await count(db, Delivery) == 8


async def test_a_gap_is_recorded_and_error_clears_on_success(db: Database) -> None:
    await setup(db, status=DistrictStatus.ERROR, last_error="boom")
    await store(db, events(0, 2))
    district = await get(db)
    assert (district.status, district.last_error) == (DistrictStatus.ACTIVE, None)
    await store(db, events(2, 2), expected_cursor=district.cursor, gap="possible gap: x")
    district = await get(db)
    assert (district.status, district.last_error) == (
        DistrictStatus.GAP_DETECTED,
        "possible gap: x",
    )


@pytest.mark.parametrize("status", [DistrictStatus.PAUSED, DistrictStatus.UNAUTHORIZED])
async def test_a_page_is_not_stored_once_the_district_is_not_to_be_polled(
    db: Database, status: DistrictStatus
) -> None:
    """Paused by an operator (or unauthorized) since the poller last read it: the poller
    learns of it at its keeper's next renewal, but no page is stored meanwhile, and neither
    the status nor its explanation is touched (a gap does not override them)."""
    await setup(db, status=status, last_error="kept")
    with pytest.raises(LeaseLost, match=f"status is {status}"):
        await store(db, events(0, 2), gap="possible gap: x")
    district = await get(db)
    assert (district.status, district.last_error, district.cursor) == (status, "kept", None)
    assert await count(db, Event) == 0


def _page_of(*items: dict[str, object]) -> bytes:
    import json

    return json.dumps({"data": [{"data": item} for item in items], "links": []}).encode()


async def test_poison_events_from_clever_are_stored_faithfully(db: Database) -> None:
    """A NUL in a record id, a record id or type longer than the column, a ``created`` past
    the calendar's edge, a NaN: each once crashed the poller again and again (PostgreSQL
    refused the row) while the district looked active. The body is kept as sent; only the
    indexed columns take a storable form."""
    import json

    from relay.clever.events import parse_events_page

    long_id = "r" * 100
    long_type = "users." + "x" * 80
    base = f"{T0:08x}"
    items = [
        {"id": base + "0" * 16, "type": "users.updated", "data": {"object": {"id": "a\x00b"}}},
        {"id": base + "0" * 15 + "1", "type": "users.created", "data": {"object": {"id": long_id}}},
        {"id": base + "0" * 15 + "2", "type": long_type, "data": {"object": {"id": "u1"}}},
        {
            "id": base + "0" * 15 + "3",
            "type": "users.updated",
            "created": "0001-01-01T00:00:00+14:00",
            "data": {"object": {"id": "u2"}},
        },
    ]
    body = _page_of(*items).replace(b'"u2"}', b'"u2", "score": NaN}')
    page = parse_events_page(body)
    await setup(db)
    result = await store(db, page.events)
    assert result.stored == 4
    async with db.read() as session:
        rows = {e.id: e for e in (await session.exec(select(Event))).all()}
    first, second, third, fourth = (rows[str(item["id"])] for item in items)
    assert first.record_id == "a\ufffdb"
    assert json.loads(first.body)["data"]["object"]["id"] == "a\x00b"  # as Clever sent it
    assert second.record_id == long_id[:64]
    assert json.loads(second.body)["data"]["object"]["id"] == long_id
    assert len(third.type) == 64
    assert json.loads(third.body)["type"] == long_type
    assert fourth.created == datetime.fromtimestamp(T0, UTC)  # the id's time instead
    assert json.loads(fourth.body)["data"]["object"]["score"] is None  # JSON, not NaN
    assert (await get(db)).status == DistrictStatus.ACTIVE


def test_json_nested_too_deeply_is_a_bad_body_not_a_crash() -> None:
    from relay._exceptions import CleverBadBody
    from relay.clever.events import parse_events_page

    with pytest.raises(CleverBadBody, match="nested too deeply"):
        parse_events_page(b'{"data": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
