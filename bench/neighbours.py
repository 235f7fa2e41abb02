"""Benchmark: a noisy neighbour, one owner's hanging endpoints beside another's (by hand).

    .venv/bin/python bench/neighbours.py [--minutes 3] [--rate 2] [--hanging 250] [--fast 5]
        [--drain 60] [--redis redis://127.0.0.1:6379/14] [--code DIR]

On a throwaway PostgreSQL database, one ``relay worker`` (the default 15 s delivery timeout).
Through ``relay serve`` (stopped once they exist): owner ``team-a`` with ``--hanging``
subscriptions to a receiver whose paths never answer (it waits until the client gives up),
owner ``team-b`` with ``--fast`` subscriptions to a receiver answering 204 at once, all to
every event. Once the worker polled the district, the simulator produces ``--rate`` events/s
for ``--minutes``; then up to ``--drain`` s for team-b's last deliveries (one that never
arrives counts as infinitely late). Prints team-b's latency (event appearance at the
simulator → first arrival at its receiver) p50/p95/p99 over the run and per minute, and
team-a's attempts (requests its receiver saw). Acceptance (#15):
team-b's p50 under 2 s.

``--code DIR`` runs another tree's ``relay`` processes (e.g. ``git archive c1ead2c``); the
subscriptions go through the REST API so that the rows are that tree's own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import appearances, district_polled
from bench.stack import (
    ROOT,
    Stack,
    percentile,
    receiver_stats,
    section,
    wait_for_deliveries,
)


def subscribe(api: httpx.Client, owner: str, url: str, count: int) -> None:
    """``count`` subscriptions, slowing down when the API's per-token rate says so (429)."""
    for k in range(count):
        body = {"url": f"{url}/{k}", "owner": owner}
        while (response := api.post("/v1/subscriptions", json=body)).status_code == 429:
            time.sleep(float(response.headers.get("retry-after", 1)))
        response.raise_for_status()


def summary(latencies: list[float]) -> str:
    """Percentiles; a delivery that never arrived counts as infinitely late (inf)."""
    return (
        f"p50 {percentile(latencies, 50):7.0f}  p95 {percentile(latencies, 95):7.0f}  "
        f"p99 {percentile(latencies, 99):7.0f}  max {max(latencies, default=float('nan')):7.0f}"
        f" ms  (n={len(latencies)}, {sum(x == float('inf') for x in latencies)} never arrived)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--rate", type=float, default=2, help="events/s")
    parser.add_argument("--hanging", type=int, default=250, help="team-a's subscriptions")
    parser.add_argument("--fast", type=int, default=5, help="team-b's subscriptions")
    parser.add_argument("--drain", type=float, default=60, help="s to wait for team-b's last")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14", help="flushed first")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()

    with Stack("postgresql", redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.hanging} hanging + {args.fast} fast subscriptions"):
            stack.create_database()
            stack.flush_redis()
            fast = stack.start_receiver(keep_arrivals=True, name="fast")
            hang = stack.start_receiver(name="hang", hang="/hang")
            sim_url, district_id, token = stack.start_simulator(0)
            api = stack.start_api()
            district = {"id": district_id, "token": token, "start_from": "earliest"}
            api.post("/v1/districts", json=district).raise_for_status()
            subscribe(api, "team-a", f"{hang}/hang", args.hanging)
            subscribe(api, "team-b", f"{fast}/b", args.fast)
            stack.stop("api")
            stack.start_workers(1)
            deadline = time.monotonic() + 30
            while not district_polled(sim_url) and time.monotonic() < deadline:
                stack.check_alive()
                time.sleep(0.2)
        with section(f"{args.rate:g} events/s for {args.minutes:g} min"):
            started = time.time()
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": args.rate})
            minutes: list[tuple[int, int]] = []  # team-a's attempts by the end of each minute
            for minute in range(1, int(args.minutes) + 1):
                time.sleep(max(0, started + minute * 60 - time.time()))
                stack.check_alive()
                minutes.append((minute, receiver_stats(hang)["count"]))
            time.sleep(max(0, started + args.minutes * 60 - time.time()))
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": 0})
            state = httpx.get(f"{sim_url}/_sim/state", timeout=30).json()
            events = int(state["districts"][0]["event_count"])
            expected = events * args.fast
            stats = wait_for_deliveries(stack, fast, expected, timeout=args.drain)
            attempts_a = receiver_stats(hang)["count"]
        arrivals = httpx.get(f"{fast}/_arrivals", timeout=60).json()
        appeared = asyncio.run(appearances(sim_url, {k.split(" ")[1] for k in arrivals}))

    by_minute: dict[int, list[float]] = {}
    latencies = [float("inf")] * (expected - len(arrivals))  # never arrived
    for key, at in arrivals.items():
        event_at = appeared[key.split(" ")[1]]
        latencies.append((at - event_at) * 1000)
        by_minute.setdefault(int((event_at - started) // 60), []).append(latencies[-1])
    print()
    print(f"code                {args.code}")
    print(f"events              {events} at {args.rate:g}/s for {args.minutes:g} min")
    print(
        f"team-a (hanging)    {args.hanging} subscriptions: {attempts_a} attempts reached its "
        f"receiver ({events * args.hanging} deliveries due)"
    )
    print(f"team-b (fast)       {args.fast} subscriptions: {stats['count']} of {expected} arrived")
    print(f"team-b latency      {summary(latencies)}")
    print(f"p50 / target        {percentile(latencies, 50) / 2000:8.2f}   (target p50 < 2000 ms)")
    print("by minute of appearance (team-b latency; team-a attempts so far):")
    attempts = dict(minutes)
    for minute in sorted(by_minute):
        so_far = attempts.get(minute + 1, attempts_a)
        print(f"  {minute + 1:3d}  {summary(by_minute[minute])}  team-a {so_far}")


if __name__ == "__main__":
    main()
