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

    assert "d1" in (await leases.renew_held(db, "A", ["d1"], 60, {})).renewed
    assert await leases.renew_held(db, "B", ["d1"], 60, {}) == leases.Renewal({}, set())
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
    lost = await leases.renew_held(db, "A", ["d1"], 30, {})
    assert lost == leases.Renewal({}, set()), "A lost it: renewing must fail"
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


async def test_renew_held_extends_every_lease_and_writes_only_the_quiet_polls(
    db: Database,
) -> None:
    """One renewal for all of a worker's leases: each is extended, the quiet polls given get
    their time (last_polled_at, caught_up_at), the others keep theirs, and what is no longer
    the owner's to poll (another's lease, paused, deleted) is left out of the answer."""
    ids = [f"d{i}" for i in range(1203)]  # more than one statement's chunk
    for district_id in ids:
        await _add(db, district_id)
    for district_id in ids:
        assert await leases.acquire(db, district_id, "A", 5)
    await _add(db, "theirs")
    assert await leases.acquire(db, "theirs", "B", 30)
    async with db.write() as session:
        paused = await session.get(District, "d7")
        assert paused is not None
        paused.status = DistrictStatus.PAUSED
        session.add(paused)
    before = await _get(db, "d1")
    polled_at = utcnow() - timedelta(seconds=1)

    renewal = await leases.renew_held(
        db, "A", [*ids, "theirs", "gone"], 60, {"d1": polled_at, "d7": polled_at}
    )

    current = renewal.renewed
    assert set(current) == set(ids) - {"d7"}
    assert renewal.busy == set()
    assert current["d1"] == before.updated_at
    renewed = await _get(db, "d1")
    assert renewed.lease_until is not None
    assert renewed.lease_until > utcnow() + timedelta(seconds=50)
    assert (renewed.last_polled_at, renewed.caught_up_at) == (polled_at, polled_at)
    assert renewed.updated_at == before.updated_at, "a renewal is not an update of the district"
    other = await _get(db, "d2")
    assert (other.last_polled_at, other.caught_up_at) == (None, None)
    assert other.lease_until is not None
    assert other.lease_until > utcnow() + timedelta(seconds=50)
    assert (await _get(db, "d7")).last_polled_at is None, "paused: not written"
    theirs = await _get(db, "theirs")
    assert theirs.lease_owner == "B"
    assert theirs.lease_until is not None
    assert theirs.lease_until < utcnow() + timedelta(seconds=31)
