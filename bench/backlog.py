"""Benchmark: draining a large backlog with flat memory (run by hand).

    .venv/bin/python bench/backlog.py [--db sqlite|postgresql] [--events 100000]
        [--subscriptions 5] [--workers 1] [--max-seconds 1800]

The simulator starts with ``--events`` events in one district, ``--subscriptions``
subscriptions to everything point at the counting receiver, and ``--workers`` ``relay
worker`` processes drain it. Every process's RSS (worker(s), simulator, receiver) is sampled
with psutil each second. Prints the drain time, deliveries/s, and per process the peak RSS
and the peak of each quarter of the run (flat memory: the quarters do not climb). Target:
< 300 MB RSS per process. Stops after ``--max-seconds`` and reports what it got so far.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import DEFAULT_REDIS, ROOT, Stack, receiver_stats, section

MB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()
    expected = args.events * args.subscriptions

    samples: dict[str, list[tuple[float, float]]] = {}  # name -> [(t, rss MB)]
    with Stack(args.db, redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.db}, {args.events} events x {args.subscriptions} subs"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver()
            _, district_id, token = stack.start_simulator(args.events)
            stack.seed(district_id, token, receiver + "/hook", args.subscriptions)
        with section(f"drain: {args.workers} worker(s)"):
            started = time.monotonic()
            stack.start_workers(args.workers)
            procs = {name: psutil.Process(pid) for name, pid in stack.pids().items()}
            stats = receiver_stats(receiver)
            next_report = started + 30
            while stats["count"] < expected and time.monotonic() - started < args.max_seconds:
                stack.check_alive()
                now = time.monotonic() - started
                for name, proc in procs.items():
                    samples.setdefault(name, []).append((now, proc.memory_info().rss / MB))
                time.sleep(1)
                stats = receiver_stats(receiver)
                if time.monotonic() >= next_report:
                    next_report += 30
                    rss = ", ".join(f"{n} {s[-1][1]:.0f}" for n, s in samples.items())
                    print(
                        f"   {now:5.0f}s {stats['count']:>7}/{expected}  RSS MB: {rss}", flush=True
                    )
            wall = time.monotonic() - started

    drained = stats["count"] >= expected
    seconds = (stats["last"] or 0) - (stats["first"] or 0)
    rate = stats["count"] / seconds if seconds > 0 else 0.0
    print()
    print(f"database            {args.db}, {args.workers} worker(s)")
    print(
        f"delivered           {stats['count']} of {expected}"
        + ("" if drained else f"  NOT DRAINED after {wall:.0f}s")
    )
    print(f"drain time          {wall:8.0f} s from worker start ({seconds:.0f}s first to last)")
    print(f"deliveries/s        {rate:8.0f}")
    if not drained and rate:
        print(f"projected drain     {expected / rate:8.0f} s at that rate")
    print(f"{'process':<12} {'peak RSS MB':>12}   peak per quarter of the run (MB)")
    for name, series in samples.items():
        peak = max(r for _, r in series)
        quarters = [series[i * len(series) // 4 : (i + 1) * len(series) // 4] for i in range(4)]
        per_q = "  ".join(f"{max((r for _, r in q), default=0):6.0f}" for q in quarters)
        flag = "ok" if peak < 300 else "OVER 300 MB"
        print(f"{name:<12} {peak:12.0f}   {per_q}   {flag}")


if __name__ == "__main__":
    main()
