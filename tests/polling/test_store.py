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
async def test_a_gap_does_not_override_an_operator_or_auth_status(
    db: Database, status: DistrictStatus
) -> None:
    await setup(db, status=status, last_error="kept")
    await store(db, events(0, 2), gap="possible gap: x")
    district = await get(db)
    assert (district.status, district.last_error) == (status, "kept")
