"""Benchmark: latency from an event appearing at Clever to its webhook arriving (by hand).

    .venv/bin/python bench/latency.py [--db sqlite|postgresql] [--seconds 60] [--rate 100]
        [--subscriptions 1] [--poll-interval 2]

The simulator (one district, no backlog) and one ``relay worker`` start idle; once the
worker has polled the district, the simulator generates ``--rate`` events/s for
``--seconds``. The receiver keeps the arrival time of each webhook; the simulator says when
each event appeared (``GET /_sim/events/{id}``). Prints p50/p99/max of arrival - appearance
and the target: p99 <= RELAY_POLL_INTERVAL + 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import (
    DEFAULT_REDIS,
    ROOT,
    Stack,
    percentile,
    section,
    wait_for_deliveries,
)


async def appearances(sim_url: str, event_ids: set[str]) -> dict[str, float]:
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=sim_url, limits=limits, timeout=30) as client:
        sem = asyncio.Semaphore(20)

        async def one(event_id: str) -> tuple[str, float]:
            async with sem:
                info = (await client.get(f"/_sim/events/{event_id}")).json()
            return event_id, float(info["appeared_at"])

        return dict(await asyncio.gather(*(one(i) for i in event_ids)))


def district_polled(sim_url: str) -> bool:
    """The worker has made its first request to the simulator's events API."""
    requests = httpx.get(f"{sim_url}/_sim/requests", timeout=10).json()["data"]
    return any("/v3.1/events" in str(r.get("path", "")) for r in requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=100, help="events/s")
    parser.add_argument("--subscriptions", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="RELAY_POLL_INTERVAL")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()

    with Stack(args.db, redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.db}, poll interval {args.poll_interval:g}s"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver(keep_arrivals=True)
            sim_url, district_id, token = stack.start_simulator(0)
            stack.seed(district_id, token, receiver + "/hook", args.subscriptions)
            stack.start_workers(1, {"RELAY_POLL_INTERVAL": str(args.poll_interval)})
            deadline = time.monotonic() + 30
            while not district_polled(sim_url) and time.monotonic() < deadline:
                stack.check_alive()
                time.sleep(0.2)
        with section(f"{args.rate:g} events/s for {args.seconds:g}s"):
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": args.rate})
            time.sleep(args.seconds)
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": 0})
            state = httpx.get(f"{sim_url}/_sim/state", timeout=30).json()
            events = int(state["districts"][0]["event_count"])
            expected = events * args.subscriptions
            stats = wait_for_deliveries(stack, receiver, expected, timeout=60)
        arrivals = httpx.get(f"{receiver}/_arrivals", timeout=60).json()
        appeared = asyncio.run(appearances(sim_url, {k.split(" ")[1] for k in arrivals}))

    latencies = [(at - appeared[key.split(" ")[1]]) * 1000 for key, at in arrivals.items()]
    target = args.poll_interval * 1000 + 250
    p99 = percentile(latencies, 99)
    print()
    print(f"database            {args.db}")
    print(f"events              {events} at {args.rate:g}/s x {args.subscriptions} subs")
    print(f"delivered           {stats['count']} of {expected}")
    print(f"latency p50         {percentile(latencies, 50):8.0f} ms")
    print(
        f"latency p99         {p99:8.0f} ms   (target <= {target:.0f} ms:"
        f" poll interval {args.poll_interval:g}s + 250 ms)"
    )
    print(f"latency max         {max(latencies, default=float('nan')):8.0f} ms")
    print(f"p99 / target        {p99 / target:8.2f}")


if __name__ == "__main__":
    main()
