"""Benchmark: ordered vs unordered subscriptions on a realistic mix, in one run (by hand).

    .venv/bin/python bench/ordered.py [--db sqlite|postgresql] [--records 8000]
        [--busy 0.1] [--subscriptions 5] [--workers 1]

The Clever simulator gets one burst: ``--records`` records, most with one event and a
``--busy`` share with five (created, three updates, deleted), the five-event records' events
spread through the burst as Clever interleaves them. The same burst is delivered twice, each
time on a fresh database: to ``--subscriptions`` unordered subscriptions, then to as many
ordered ones; deliveries/s is measured at the counting receiver (uvicorn + httptools +
uvloop) from the first delivery to the last. Target: ordered >= 70 % of unordered.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import DEFAULT_REDIS, ROOT, Stack, section, wait_for_deliveries

ACTIONS = ("created", "updated", "updated", "updated", "deleted")


def burst(records: int, busy: float, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    chains = [5 if rng.random() < busy else 1 for _ in range(records)]
    slots = [r for r, length in enumerate(chains) for _ in range(length)]
    rng.shuffle(slots)
    seen = [0] * records
    specs = []
    for r in slots:
        action = ACTIONS[seen[r]] if chains[r] == 5 else "updated"
        seen[r] += 1
        specs.append({"type": f"users.{action}", "object": {"id": f"{r:024x}", "n": seen[r]}})
    return specs


def run(args: argparse.Namespace, specs: list[dict[str, Any]], ordered: bool) -> float:
    expected = len(specs) * args.subscriptions
    label = "ordered" if ordered else "unordered"
    with Stack(args.db, redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.db}, {len(specs)} events x {args.subscriptions} {label}"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver()
            url, district_id, token = stack.start_simulator(0)
            for start in range(0, len(specs), 2000):
                r = httpx.post(
                    f"{url}/_sim/districts/{district_id}/events",
                    json=specs[start : start + 2000],
                    timeout=60,
                )
                r.raise_for_status()
            stack.seed(district_id, token, receiver + "/hook", args.subscriptions, ordered)
        with section(f"relay: {args.workers} worker(s), {label}"):
            stack.start_workers(args.workers, {"RELAY_POLL_INTERVAL": "1"})
            stats = wait_for_deliveries(stack, receiver, expected, args.timeout)
        seconds = (stats["last"] or 0) - (stats["first"] or 0)
        if stats["count"] < expected:
            print(f"INCOMPLETE: {stats['count']} of {expected} {label} deliveries")
        return stats["count"] / seconds if seconds > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--records", type=int, default=8000)
    parser.add_argument("--busy", type=float, default=0.1, help="share with five events")
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before each run")
    parser.add_argument("--timeout", type=float, default=600, help="give up after (s)")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()
    specs = burst(args.records, args.busy)
    started = time.perf_counter()
    unordered = run(args, specs, ordered=False)
    ordered = run(args, specs, ordered=True)
    print()
    print(f"database            {args.db}, {args.workers} worker(s)")
    print(f"events              {len(specs)} ({args.records} records, {args.busy:.0%} with five)")
    print(f"unordered           {unordered:8.0f}/s")
    print(f"ordered             {ordered:8.0f}/s")
    print(f"ordered / unordered {ordered / unordered:8.2f}   (target >= 0.70)")
    print(f"(both runs in {time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
