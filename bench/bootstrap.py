"""Benchmark: a bootstrap of a large roster to one subscription, beside live events (by hand).

    .venv/bin/python bench/bootstrap.py [--db sqlite|postgresql] [--size 100000]
        [--live-rate 20] [--poll-interval 2]

Two simulated districts: a large one (about ``--size`` records, synced first with no
subscription, as ``bench/sync.py`` makes it) and a small one whose Clever produces
``--live-rate`` events/s. One ``relay worker``. A live subscription takes the small district's
events; then a new subscription asks for a bootstrap of the large district's roster. Prints
the bootstrap's delivery rate (from the request to its last snapshot at the receiver) and the
live events' latency meanwhile (arrival at the receiver - appearance at the simulator).
Targets (DESIGN.md): the bootstrap at >= 50 % of the throughput target's rate (40 % of the
bare loop's ~12,000/s measured here: 4,800/s, so >= 2,400/s), and the live events' p99 within
the latency target (RELAY_POLL_INTERVAL + 250 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import appearances
from bench.stack import DEFAULT_REDIS, Stack, percentile, receiver_stats, section
from bench.sync import _sync, district_size
from relay.db import Database, utcnow
from relay.db.models import District, DistrictStatus, Subscription
from relay.delivery.bootstrap import request_bootstrap
from relay.delivery.signing import generate_secret
from relay.roster import syncs

TARGET = 0.5 * 0.4 * 12_000


async def _register(url: str, large: dict[str, str], small: dict[str, str], receiver: str) -> None:
    db = Database(url)
    try:
        async with db.write() as session:
            session.add(
                Subscription(
                    owner="live",
                    url=f"{receiver}/live",
                    secret=generate_secret(),
                    districts=[small["id"]],
                )
            )
            session.add(District(id=small["id"], token=small["token"]))
            session.add(District(id=large["id"], token=large["token"], start_from="sync"))
            await session.flush()
            sync_id = await syncs.begin(
                await session.connection(), large["id"], syncs.INITIAL, utcnow()
            )
            district = await session.get(District, large["id"])
            assert district is not None
            district.sync_id, district.status = sync_id, DistrictStatus.SYNCING
            session.add(district)
    finally:
        await db.dispose()


async def _bootstrap(url: str, receiver: str, district_id: str) -> int:
    db = Database(url)
    try:
        async with db.write() as session:
            sub = Subscription(
                owner="late",
                url=f"{receiver}/late",
                secret=generate_secret(),
                districts=[district_id],
            )
            session.add(sub)
            await session.flush()
            return await request_bootstrap(session, sub)
    finally:
        await db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--size", type=int, default=100_000, help="records (about)")
    parser.add_argument("--live-rate", type=float, default=20, help="events/s, small district")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--redis", default=DEFAULT_REDIS)
    args = parser.parse_args()
    with Stack(args.db, redis_url=args.redis) as stack:
        stack.flush_redis()
        url = stack.create_database()
        with section(f"simulator: a district of about {args.size:,} records and a small one"):
            sim_url, small_id, small_token = stack.start_simulator(backlog=0, districts=1)
            large = httpx.post(
                f"{sim_url}/_sim/districts", json={"size": district_size(args.size)}, timeout=600
            ).json()
        receiver = stack.start_receiver(keep_arrivals=True)  # live: arrival times kept
        counting = stack.start_receiver(name="counting")  # the bootstrap: counted only
        small = {"id": small_id, "token": small_token}
        asyncio.run(_register(url, large, small, receiver))
        env = {"RELAY_POLL_INTERVAL": str(args.poll_interval), "RELAY_LOG_LEVEL": "INFO"}
        stack.start_workers(1, env)
        with section("the large district's sync (no subscription yet)"):
            while asyncio.run(_sync(url, 1)).state == "running":
                stack.check_alive()
                time.sleep(0.5)
        httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": args.live_rate}, timeout=10)
        time.sleep(3)
        started = time.monotonic()
        matched = asyncio.run(_bootstrap(url, counting, large["id"]))
        print(f"bootstrap of {matched:,} records requested")
        while receiver_stats(counting)["count"] < matched:
            stack.check_alive()
            time.sleep(0.2)
            if time.monotonic() - started > 900:
                break
        took = time.monotonic() - started
        httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": 0}, timeout=10)
        time.sleep(args.poll_interval + 2)
        arrivals = httpx.get(f"{receiver}/_arrivals", timeout=60).json()
        live = {k: v for k, v in arrivals.items() if k.startswith("/live ")}
        appeared = asyncio.run(appearances(sim_url, {k.split(" ")[1] for k in live}))
        latency = [(at - appeared[k.split(" ")[1]]) * 1000 for k, at in live.items()]
        rate = matched / took
        p99 = percentile(latency, 99)
        print(
            f"bootstrap: {matched:,} snapshots in {took:.1f}s = {rate:,.0f}/s "
            f"(target >= {TARGET:,.0f}/s)\nlive events meanwhile: {len(latency)}, p50 "
            f"{percentile(latency, 50):.0f} ms, p99 {p99:.0f} ms (target <= "
            f"{args.poll_interval * 1000 + 250:.0f} ms)"
        )
        ok = rate >= TARGET and p99 <= args.poll_interval * 1000 + 250
        print("targets met" if ok else "TARGETS NOT MET")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
