"""Benchmark: per-subscription delivery limits, held across workers (run by hand).

    .venv/bin/python bench/limits.py [--db postgresql] [--workers 2] [--events 20000]
        [--delay 0.05] [--seconds 60]

Three subscriptions get every event of one district (a backlog of ``--events``), at a
receiver that answers each POST after ``--delay`` seconds: ``default`` (max_in_flight 8),
``wide`` (max_in_flight 50) and ``throttled`` (max_per_second 20). Prints each one's rate
(default and wide over 10 s once the whole backlog is stored: while it is being polled, wide
is held to the ingest's rate, ~360/s) and its per-second counts, the wide/default ratio
(target >= 5: the rate is max_in_flight / response time, so 8 → ~160/s and 50 → ~1,000/s at
50 ms) and the throttled one's mean and worst second (target: within 10 % of 20/s over a
minute, with two workers).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
from sqlmodel import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import DEFAULT_REDIS, Stack, free_port, section, wait_for_port
from relay.db import Database
from relay.db.models import Delivery, District, Subscription
from relay.delivery.signing import generate_secret

# A raw ASGI receiver that answers 204 after ARGV[2] seconds, keeping per path the arrival
# second (wall clock) of every POST: GET /_seconds gives {path: {second: count}}.
RECEIVER = r"""
import asyncio, json, sys, time, uvicorn
from collections import defaultdict

delay = float(sys.argv[2])
seconds = defaultdict(lambda: defaultdict(int))

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body, status = b"", 204
    if scope["method"] == "POST":
        seconds[scope["path"]][int(time.time())] += 1
        await asyncio.sleep(delay)
    else:
        body, status = json.dumps(seconds).encode(), 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools", lifespan="off", backlog=4096)
"""

LIMITS = {
    "default": {},
    "wide": {"max_in_flight": 50},
    "throttled": {"max_per_second": 20},
}


def seed(stack: Stack, district_id: str, token: str, receiver: str) -> None:
    async def go() -> None:
        db = Database(stack.database_url)
        try:
            async with db.write() as session:
                for name, limits in LIMITS.items():
                    url = f"{receiver}/{name}"
                    session.add(
                        Subscription(owner="bench", url=url, secret=generate_secret(), **limits)
                    )
                session.add(District(id=district_id, token=token, start_from="earliest"))
        finally:
            await db.dispose()

    asyncio.run(go())


def deliveries_stored(stack: Stack) -> int:
    async def go() -> int:
        db = Database(stack.database_url)
        try:
            async with db.read() as session:
                return int((await session.exec(select(func.count()).select_from(Delivery))).one())
        finally:
            await db.dispose()

    return asyncio.run(go())


def rate(per_second: dict[str, int], first: int, last: int) -> float:
    return sum(per_second.get(str(s), 0) for s in range(first, last)) / max(last - first, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--delay", type=float, default=0.05, help="receiver's answer time (s)")
    parser.add_argument("--seconds", type=float, default=60, help="measured window (s)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    args = parser.parse_args()

    with Stack(args.db, redis_url=args.redis) as stack:
        with section(f"setup: {args.db}, {args.events} events x {len(LIMITS)} subscriptions"):
            stack.create_database()
            stack.flush_redis()
            port = free_port()
            stack.start("receiver", [sys.executable, "-c", RECEIVER, str(port), str(args.delay)])
            wait_for_port(port, stack.procs["receiver"])
            receiver = f"http://127.0.0.1:{port}"
            _, district_id, token = stack.start_simulator(args.events)
            seed(stack, district_id, token, receiver)
        with section(f"relay: {args.workers} worker(s), {args.seconds:.0f}s measured"):
            stack.start_workers(args.workers, {"RELAY_POLL_INTERVAL": "1"})
            deadline = time.monotonic() + args.seconds + 60
            while time.monotonic() < deadline:  # until the throttled one has begun
                stack.check_alive()
                if httpx.get(f"{receiver}/_seconds", timeout=30).json().get("/throttled"):
                    break
                time.sleep(0.5)
            # default and wide are measured once every event is stored: while the backlog is
            # being polled, wide is held to the ingest's rate, not its max_in_flight
            while deliveries_stored(stack) < len(LIMITS) * args.events:
                stack.check_alive()
                time.sleep(0.5)
            start = int(time.time()) + 1  # whole seconds, past the first one
            time.sleep(args.seconds + 3)
            seconds = httpx.get(f"{receiver}/_seconds", timeout=30).json()
            stack.check_alive()
    end = start + int(args.seconds)
    # default and wide over the first 10 s once all is stored (wide may run out of backlog
    # later), throttled over the whole window
    rates = {name: rate(seconds.get(f"/{name}", {}), start, start + 10) for name in LIMITS}
    rates["throttled"] = rate(seconds.get("/throttled", {}), start, end)
    throttled = [seconds.get("/throttled", {}).get(str(s), 0) for s in range(start, end)]
    print()
    print(f"database, workers   {args.db}, {args.workers}; receiver answers in {args.delay}s")
    for name, limits in LIMITS.items():
        window = f"{args.seconds:.0f} s" if name == "throttled" else "first 10 s, all stored"
        print(f"{name:<19} {rates[name]:8.1f}/s  {limits or '(max_in_flight 8)'}, {window}")
    for name in LIMITS:
        counts = seconds.get(f"/{name}", {})
        print(f"  {name:<17} per second: {[counts.get(str(s), 0) for s in range(start, end)]}")
    ratio = rates["wide"] / rates["default"] if rates["default"] else float("nan")
    print(f"wide / default      {ratio:8.2f}   (target >= 5)")
    off = abs(rates["throttled"] - 20) / 20
    print(
        f"throttled           mean {rates['throttled']:.2f}/s over {len(throttled)} s "
        f"({off:.1%} from 20/s; target <= 10 %), seconds min {min(throttled)} max {max(throttled)}"
    )


if __name__ == "__main__":
    main()
