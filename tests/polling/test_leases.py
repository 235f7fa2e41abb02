"""District poll leases on the real database (SQLite or PostgreSQL per RELAY_TEST_DATABASE)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from relay.db import Database, utcnow
from relay.db.models import District, DistrictStatus
from relay.polling import leases


async def _add(db: Database, district_id: str, **fields: object) -> None:
    async with db.write() as session:
        session.add(District(id=district_id, token=f"tok-{district_id}", **fields))


async def _get(db: Database, district_id: str) -> District:
    async with db.read() as session:
        district = await session.get(District, district_id)
    assert district is not None
    return district


async def test_acquire_renew_release_and_a_second_owner(db: Database) -> None:
    await _add(db, "d1")
    assert await leases.acquire(db, "d1", "A", 30)
    assert not await leases.acquire(db, "d1", "B", 30), "B must not take A's live lease"
    assert await leases.acquire(db, "d1", "A", 30), "the holder may take it again"
    held = await _get(db, "d1")
    assert held.lease_owner == "A"
    assert held.lease_until is not None
    assert held.lease_until > utcnow() + timedelta(seconds=25)

    assert await leases.renew(db, "d1", "A", 60)
    assert not await leases.renew(db, "d1", "B", 60)
    renewed = await _get(db, "d1")
    assert renewed.lease_until is not None
    assert renewed.lease_until > held.lease_until

    await leases.release(db, "d1", "B")  # not B's: no effect
    assert (await _get(db, "d1")).lease_owner == "A"
    await leases.release(db, "d1", "A")
    released = await _get(db, "d1")
    assert (released.lease_owner, released.lease_until) == (None, None)
    assert await leases.acquire(db, "d1", "B", 30)


async def test_an_expired_lease_goes_to_another_owner_and_the_old_one_cannot_renew(
    db: Database,
) -> None:
    await _add(db, "d1")
    assert await leases.acquire(db, "d1", "A", 0.2)
    assert "d1" not in await leases.due_districts(db, 200)
    await asyncio.sleep(0.3)
    assert "d1" in await leases.due_districts(db, 200), "an expired lease is due again"
    assert await leases.acquire(db, "d1", "B", 30)
    assert not await leases.renew(db, "d1", "A", 30), "A lost it: renewing must fail"
    await leases.release(db, "d1", "A")
    assert (await _get(db, "d1")).lease_owner == "B"


async def test_due_districts_skips_paused_unauthorized_and_not_yet_due(db: Database) -> None:
    later = utcnow() + timedelta(minutes=5)
    await _add(db, "active")
    await _add(db, "gap", status=DistrictStatus.GAP_DETECTED)
    await _add(db, "error", status=DistrictStatus.ERROR)
    await _add(db, "paused", status=DistrictStatus.PAUSED)
    await _add(db, "unauthorized", status=DistrictStatus.UNAUTHORIZED)
    await _add(db, "later", poll_after=later)
    await _add(db, "earlier", poll_after=utcnow() - timedelta(seconds=1))
    assert sorted(await leases.due_districts(db, 200)) == ["active", "earlier", "error", "gap"]
    assert not await leases.acquire(db, "paused", "A", 30)
    assert not await leases.acquire(db, "unauthorized", "A", 30)


async def test_acquire_honours_poll_after_set_by_another_workers_release(db: Database) -> None:
    """A scans (d1 due), B takes d1, hits a 429 and releases it with poll_after = the reset:
    A's acquire, based on its stale scan, must not poll before that reset."""
    await _add(db, "d1")
    assert "d1" in await leases.due_districts(db, 200)  # A's scan
    assert await leases.acquire(db, "d1", "B", 30)
    await leases.release(db, "d1", "B", poll_after=utcnow() + timedelta(seconds=0.5))
    assert not await leases.acquire(db, "d1", "A", 30)
    await asyncio.sleep(0.6)
    assert await leases.acquire(db, "d1", "A", 30)


async def test_two_owners_racing_on_separate_connections_never_both_win(
    database_url: str,
) -> None:
    """Two engines stand for two worker processes; many rounds of simultaneous acquires."""
    a, b = Database(database_url), Database(database_url)
    try:
        ids = [f"d{i}" for i in range(20)]
        for district_id in ids:
            await _add(a, district_id)
        won_a = await asyncio.gather(*(leases.acquire(a, d, "A", 30) for d in ids))
        # interleave B's attempts with A's on the same rows
        results = await asyncio.gather(
            *(leases.acquire(b, d, "B", 30) for d in ids),
            *(leases.acquire(a, d, "A", 30) for d in ids),
        )
        won_b = results[: len(ids)]
        assert all(won_a)
        assert not any(won_b)
        owners = {d: (await _get(a, d)).lease_owner for d in ids}
        assert set(owners.values()) == {"A"}

        # all free at once: exactly one of A and B gets each
        for district_id in ids:
            await leases.release(a, district_id, "A")
        race = await asyncio.gather(
            *(leases.acquire(x, d, name, 30) for d in ids for x, name in ((a, "A"), (b, "B")))
        )
        pairs = [race[i : i + 2] for i in range(0, len(race), 2)]
        assert all(sum(pair) == 1 for pair in pairs), pairs
        for district_id, pair in zip(ids, pairs, strict=True):
            assert (await _get(a, district_id)).lease_owner == ("A" if pair[0] else "B")
    finally:
        await a.dispose()
        await b.dispose()
