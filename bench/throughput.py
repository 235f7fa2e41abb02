"""Benchmark: end-to-end delivery throughput against a bare aiohttp loop (run by hand).

    .venv/bin/python bench/throughput.py [--db sqlite|postgresql] [--events 5000]
        [--subscriptions 5] [--workers 1] [--redis redis://127.0.0.1:6379/15]

Starts the Clever simulator with a backlog of ``--events`` events in one district, a counting
receiver (raw ASGI under uvicorn, 204) with ``--subscriptions`` subscriptions to everything,
and ``--workers`` ``relay worker`` processes on a throwaway database. Relay deliveries/s is
measured at the receiver from the first delivery to the last (so it includes polling,
storing and queueing that overlaps delivery). Then, in the same run and against the same
receiver, a bare aiohttp loop signs and POSTs the same bodies, as many at a time as the
relay's workers can have in flight (``--bare-runs`` times, averaged: on this noisy machine one
bare run varies by ±20 %), and the ratio relay/bare is printed (target >= 0.30 with one
worker), with the CPU each spends per delivery (steadier than the rates on a noisy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import httpx
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import (
    DEFAULT_REDIS,
    ROOT,
    Stack,
    cpu_seconds,
    receiver_stats,
    section,
    wait_for_deliveries,
)
from relay.db import Database
from relay.db.models import Event, Subscription
from relay.delivery.signing import webhook_headers
from relay.tuning import DeliveryTuning


async def _bodies(database_url: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    db = Database(database_url)
    try:
        async with db.read() as session:
            events = (await session.exec(select(Event.id, Event.body))).all()
            subs = (await session.exec(select(Subscription.url, Subscription.secret))).all()
    finally:
        await db.dispose()
    return [(i, b.encode()) for i, b in events], [(u, s) for u, s in subs]


async def bare_loop(
    events: list[tuple[str, bytes]], subs: list[tuple[str, str]], concurrency: int
) -> tuple[float, int]:
    """Sign and POST every (event, subscription) pair, ``concurrency`` at a time; (seconds,
    failures)."""
    jobs = iter([(e, s) for e in events for s in subs])
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal failures
            for (event_id, body), (url, secret) in jobs:
                headers = webhook_headers([secret], event_id, body)
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    failures += response.status != 204

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--timeout", type=float, default=600, help="give up after (s)")
    parser.add_argument(
        "--bare-runs", type=int, default=3, help="bare loop runs, averaged (the machine is noisy)"
    )
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()
    expected = args.events * args.subscriptions
    in_flight = args.workers * min(
        DeliveryTuning().first_attempt_jobs,
        args.subscriptions * 8,  # the default max_in_flight
    )

    with Stack(args.db, redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.db}, {args.events} events x {args.subscriptions} subs"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver()
            _, district_id, token = stack.start_simulator(args.events)
            stack.seed(district_id, token, receiver + "/hook", args.subscriptions)
        with section(f"relay: {args.workers} worker(s)"):
            started = time.perf_counter()
            stack.start_workers(args.workers, {"RELAY_POLL_INTERVAL": "1"})
            stats = wait_for_deliveries(stack, receiver, expected, args.timeout)
            wall = time.perf_counter() - started
            workers = [p for name, p in stack.pids().items() if name.startswith("worker")]
            relay_cpu = sum(cpu_seconds(pid) for pid in workers)
        relay_seconds = (stats["last"] or 0) - (stats["first"] or 0)
        relay_rate = stats["count"] / relay_seconds if relay_seconds > 0 else 0.0
        for name in [n for n in stack.procs if n.startswith("worker")]:
            stack.stop(name)
        time.sleep(1.5)  # PostgreSQL publishes a session's counters within a second of its end
        counters = stack.pg_counters()

        bare_rates: list[float] = []
        bare_cpu = 0.0
        events, subs = asyncio.run(_bodies(stack.database_url))
        for n in range(args.bare_runs):
            with section(f"bare aiohttp #{n + 1}: {expected} signed POSTs, {in_flight} at a time"):
                httpx.post(f"{receiver}/_reset", timeout=30)
                cpu_before = time.process_time()
                bare_seconds, failures = asyncio.run(bare_loop(events, subs, in_flight))
                bare_cpu += time.process_time() - cpu_before
                bare_rates.append(receiver_stats(receiver)["count"] / bare_seconds)
        bare_rate = sum(bare_rates) / len(bare_rates)

    print()
    print(f"database            {args.db}")
    print(f"deliveries          {stats['count']} of {expected} (wall from start {wall:.1f}s)")
    print(f"relay               {relay_rate:8.0f}/s  ({relay_seconds:.1f}s first to last)")
    runs = ", ".join(f"{r:.0f}" for r in bare_rates)
    print(f"bare aiohttp        {bare_rate:8.0f}/s  (mean of {runs}; failures {failures})")
    print(f"relay / bare        {relay_rate / bare_rate:8.2f}   (target >= 0.30)")
    relay_ms = 1000 * relay_cpu / max(stats["count"], 1)
    bare_ms = 1000 * bare_cpu / (expected * args.bare_runs)
    print(
        f"CPU per delivery    relay workers {relay_ms:.3f} ms (from their start: polling and "
        f"ingest included), bare loop {bare_ms:.3f} ms"
    )
    if counters:
        per = {k: v / max(stats["count"], 1) for k, v in counters.items()}
        print(
            f"PostgreSQL per delivery (everything: polling, ingest, reconciler included): "
            f"{per['xact_commit']:.2f} commits, {per['tup_inserted']:.2f} rows inserted, "
            f"{per['tup_updated']:.2f} updated, {per['tup_fetched']:.2f} fetched"
        )
    if stats["count"] < expected:
        print("INCOMPLETE: not every delivery arrived before the timeout")


if __name__ == "__main__":
    main()
