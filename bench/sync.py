"""Benchmark: a full roster sync of a large district from the Clever simulator (by hand).

    .venv/bin/python bench/sync.py [--db sqlite|postgresql] [--size 100000]
        [--subscriptions 1] [--page 1000]

Makes one simulated district of about ``--size`` records (half of them users: the
simulator's ``size`` knobs, scaled), registers it with ``start_from: "sync"`` and one
subscription to a counting receiver, starts one ``relay worker`` and times, from the worker's
start, the sync (cursor taken, every Data API page read, compared and stored with its
deliveries) and the deliveries of its ``created`` events, sampling the peak RSS of the worker
and of its polling child (where the sync runs). Then it asks for a second sync of the
unchanged district and checks that it stores no event. Targets (DESIGN.md): under 60 s, worker
RSS under 300 MB, and the re-sync storing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import DEFAULT_REDIS, Stack, receiver_stats, section
from relay.db import Database, utcnow
from relay.db.models import District, DistrictStatus, Event, Subscription, Sync
from relay.delivery.signing import generate_secret
from relay.roster import syncs


def district_size(records: int) -> dict[str, int]:
    """Simulator knobs for about ``records`` records, half of them users: per school 900
    students, 100 teachers and 800 sections (+ contacts, a tenth of the students), with
    courses and terms as in a real district."""
    schools = max(1, round(records / 2000))
    return {
        "schools": schools,
        "students_per_school": 900,
        "teachers_per_school": 100,
        "sections_per_school": 900,
        "courses": max(1, schools * 20),
        "terms": 4,
        "resources": 10,
    }


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and of its live descendants, each counted once."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        proc = Path(f"/proc/{current}")
        try:
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in (proc / "task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


class PeakRss:
    """Samples a process tree's RSS every 0.1 s in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, tree_rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def _setup(url: str, district_id: str, token: str, receiver: str, subs: int) -> None:
    db = Database(url)
    try:
        async with db.write() as session:
            for k in range(subs):
                session.add(
                    Subscription(owner="bench", url=f"{receiver}/{k}", secret=generate_secret())
                )
            session.add(District(id=district_id, token=token, start_from="sync"))
        await _resync(db, district_id, syncs.INITIAL)
    finally:
        await db.dispose()


async def _resync(db: Database, district_id: str, reason: str) -> int:
    async with db.write() as session:
        district = await session.get(District, district_id)
        assert district is not None
        sync_id = await syncs.begin(await session.connection(), district_id, reason, utcnow())
        district.sync_id, district.status = sync_id, DistrictStatus.SYNCING
        district.updated_at = utcnow()
        session.add(district)
    return sync_id


async def _resync_once(url: str, district_id: str) -> int:
    db = Database(url)
    try:
        return await _resync(db, district_id, syncs.REQUESTED)
    finally:
        await db.dispose()


async def _sync(url: str, sync_id: int) -> Sync:
    db = Database(url)
    try:
        async with db.read() as session:
            sync = await session.get(Sync, sync_id)
        assert sync is not None
        return sync
    finally:
        await db.dispose()


async def _count_events(url: str) -> int:
    from sqlalchemy import func
    from sqlmodel import select

    db = Database(url)
    try:
        async with db.read() as session:
            return int((await session.exec(select(func.count()).select_from(Event))).one())
    finally:
        await db.dispose()


def wait_sync(stack: Stack, url: str, sync_id: int, timeout: float) -> Sync:
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        sync = asyncio.run(_sync(url, sync_id))
        if sync.state != "running" or time.monotonic() > deadline:
            return sync
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--size", type=int, default=100_000, help="records (about)")
    parser.add_argument("--subscriptions", type=int, default=1)
    parser.add_argument("--page", type=int, default=1000, help="RELAY_SYNC_PAGE_SIZE")
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    args = parser.parse_args()
    with Stack(args.db, redis_url=args.redis) as stack:
        stack.flush_redis()
        url = stack.create_database()
        with section(f"simulator: one district of about {args.size:,} records"):
            sim_url, _, _ = stack.start_simulator(backlog=0, districts=1)
            made: dict[str, Any] = httpx.post(
                f"{sim_url}/_sim/districts", json={"size": district_size(args.size)}, timeout=600
            ).json()
            counts = {
                t: len(
                    httpx.get(
                        f"{sim_url}/v3.1/{t}",
                        params={"limit": 10000},
                        headers={"Authorization": f"Bearer {made['token']}"},
                        timeout=60,
                    ).json()["data"]
                )
                for t in ("schools",)
            }
            print(f"   district {made['id']} ({counts['schools']} schools)")
        receiver = stack.start_receiver()
        asyncio.run(_setup(url, made["id"], made["token"], receiver, args.subscriptions))
        env = {"RELAY_SYNC_PAGE_SIZE": str(args.page), "RELAY_LOG_LEVEL": "INFO"}
        started = time.monotonic()
        stack.start_workers(1, env)
        rss = PeakRss(stack.procs["worker-0"].pid)
        sync = wait_sync(stack, url, 1, 600)
        synced_in = time.monotonic() - started
        print(
            f"sync {sync.state} in {synced_in:.1f}s from worker start: {sync.records_read:,} "
            f"records read, {sync.created:,} created, {sync.updated} updated, "
            f"{sync.deleted} deleted ({sync.records_read / synced_in:,.0f} records/s)"
        )
        expected = sync.created * args.subscriptions
        while receiver_stats(receiver)["count"] < expected:
            stack.check_alive()
            time.sleep(0.2)
            if time.monotonic() - started > 900:
                break
        delivered_in = time.monotonic() - started
        peak = rss.stop()
        print(
            f"deliveries: {receiver_stats(receiver)['count']:,} of {expected:,} by "
            f"{delivered_in:.1f}s; peak RSS of the worker and its polling child "
            f"{peak / 2**20:.0f} MB"
        )
        before = asyncio.run(_count_events(url))
        second = asyncio.run(_resync_once(url, made["id"]))
        resync_started = time.monotonic()
        again = wait_sync(stack, url, second, 600)
        after = asyncio.run(_count_events(url))
        print(
            f"re-sync of the unchanged district: {again.state} in "
            f"{time.monotonic() - resync_started:.1f}s, {again.records_read:,} read, "
            f"+{again.created} ~{again.updated} -{again.deleted}; events stored: "
            f"{after - before} (the sync's own notice aside: relay.district.synced)"
        )
        ok = sync.state == "succeeded" and synced_in < 60 and peak < 300 * 2**20
        ok = ok and (again.created, again.updated, again.deleted) == (0, 0, 0)
        print("targets met" if ok else "TARGETS NOT MET")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
