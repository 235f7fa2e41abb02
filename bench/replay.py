"""Benchmark: a 100,000-event replay beside live traffic, in one run (by hand).

    .venv/bin/python bench/replay.py [--db sqlite|postgresql] [--events 100000] [--rate 50]

The simulator starts with ``--events`` stored history, which one worker ingests with no
subscription. Then two subscriptions to everything: ``/live`` and ``/replay``. Live events
arrive at ``--rate`` events/s throughout; for ``--baseline`` seconds nothing else happens,
then ``/replay`` asks for the whole history (``POST …/replay``, through the library, as the
API does). Printed: the live subscription's latency (event appearing at Clever → arrival)
before and during the replay, and how long the replay took. Target: live p99 within
poll interval + 250 ms during the replay as before it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import appearances
from bench.stack import DEFAULT_REDIS, ROOT, Stack, percentile, receiver_stats, section
from relay.db import Database, utcnow
from relay.db.models import District, Event, Replay, Subscription
from relay.delivery.replay import request_replay
from relay.delivery.signing import generate_secret


async def _count(url: str, query: object) -> int:
    db = Database(url)
    try:
        async with db.read() as session:
            return int((await session.exec(query)).one())  # type: ignore[call-overload]
    finally:
        await db.dispose()


async def _subscribe(url: str, receiver: str) -> str:
    db = Database(url)
    try:
        async with db.write() as session:
            live = Subscription(owner="bench", url=f"{receiver}/live", secret=generate_secret())
            late = Subscription(owner="bench", url=f"{receiver}/replay", secret=generate_secret())
            session.add(live)
            session.add(late)
        return late.id
    finally:
        await db.dispose()


async def _replay(url: str, subscription_id: str) -> int:
    db = Database(url)
    try:
        async with db.read() as session:
            sub = await session.get(Subscription, subscription_id)
        assert sub is not None
        return await request_replay(db, sub, datetime(2000, 1, 1, tzinfo=UTC), utcnow(), 2000)
    finally:
        await db.dispose()


async def _add_district(url: str, district_id: str, token: str) -> None:
    db = Database(url)
    try:
        async with db.write() as session:
            session.add(District(id=district_id, token=token, start_from="earliest"))
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50, help="live events/s")
    parser.add_argument("--baseline", type=float, default=20, help="seconds before the replay")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--code", type=Path, default=ROOT)
    args = parser.parse_args()
    stored = select(func.count()).select_from(Event)
    with Stack(args.db, redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.db}, ingest {args.events} events with no subscription"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver(keep_arrivals=True)
            sim_url, district_id, token = stack.start_simulator(args.events)
            asyncio.run(_add_district(stack.database_url, district_id, token))
            stack.start_workers(1, {"RELAY_POLL_INTERVAL": str(args.poll_interval)})
            while asyncio.run(_count(stack.database_url, stored)) < args.events:
                stack.check_alive()
                time.sleep(1)
            replay_sub = asyncio.run(_subscribe(stack.database_url, receiver))
        with section(f"live {args.rate:g}/s, baseline {args.baseline:g}s, then the replay"):
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": args.rate})
            time.sleep(args.baseline)
            replay_started = time.time()
            matched = asyncio.run(_replay(stack.database_url, replay_sub))
            asked = time.time() - replay_started
            done = select(func.count()).select_from(Replay).where(Replay.done.is_(True))  # type: ignore[attr-defined]
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                arrivals = httpx.get(f"{receiver}/_arrivals", timeout=60).json()
                replayed = sum(1 for k in arrivals if k.startswith("/replay "))
                if replayed >= matched and asyncio.run(_count(stack.database_url, done)):
                    break
                stack.check_alive()
                time.sleep(1)
            replay_seconds = time.time() - replay_started
            time.sleep(args.poll_interval + 2)
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": 0})
            time.sleep(args.poll_interval + 2)
        arrivals = httpx.get(f"{receiver}/_arrivals", timeout=60).json()
        live = {k.split(" ")[1]: at for k, at in arrivals.items() if k.startswith("/live ")}
        appeared = asyncio.run(appearances(sim_url, set(live)))
        stats = receiver_stats(receiver)
    before = [(at - appeared[i]) * 1000 for i, at in live.items() if appeared[i] < replay_started]
    during = [
        (at - appeared[i]) * 1000
        for i, at in live.items()
        if replay_started <= appeared[i] <= replay_started + replay_seconds
    ]
    target = args.poll_interval * 1000 + 250
    print()
    print(f"database            {args.db}, 1 worker")
    print(f"replay              {matched} events in {replay_seconds:.1f}s (asked in {asked:.1f}s)")
    print(f"                    {matched / replay_seconds:.0f}/s; receiver total {stats['count']}")
    for name, values in (("before the replay", before), ("during the replay", during)):
        print(
            f"live {name:18} {len(values):6d} events  p50 {percentile(values, 50):6.0f} ms  "
            f"p99 {percentile(values, 99):6.0f} ms  max {max(values, default=0):6.0f} ms"
        )
    print(f"target p99          {target:.0f} ms (poll interval + 250 ms)")


if __name__ == "__main__":
    main()
