"""Benchmark: many quiet districts on one worker (run by hand).

    .venv/bin/python bench/districts.py [--db postgresql|sqlite] [--districts 1000]
        [--poll-interval 2] [--window 60] [--workers 1] [--redis redis://127.0.0.1:6379/15]
        [--code DIR]

The simulator serves ``--districts`` districts with no events; they are registered (from
their earliest event) with one subscription to everything, and ``--workers`` ``relay worker``
processes poll them every ``--poll-interval`` seconds. Once every district has been polled
and a warm-up has passed, for ``--window`` seconds nothing happens and the bench counts, from
the simulator's request log, the polls of each district (the interval's rate is window /
interval polls each) and the CPU time of the worker, the simulator and the PostgreSQL
backends of the bench database. Then one new event appears in each district (spread over
``--spread`` seconds) and the bench measures, per district, the time from the event
appearing at the simulator to its webhook arriving at the receiver.

Targets (DESIGN.md): every district polled at >= 90 % of the interval's rate, p99 of a new
event <= interval + 1 s, <= 1 ms of worker CPU per idle poll.

The simulator always runs from this tree (it is the test double, not the relay under test),
so ``--code DIR`` changes only the relay's processes: A/B runs share the same Clever.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections import Counter
from math import inf
from pathlib import Path

import httpx
import psutil
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.latency import appearances
from bench.stack import (
    DEFAULT_REDIS,
    RELAY,
    ROOT,
    Stack,
    free_port,
    percentile,
    section,
    wait_for_port,
)
from relay.db import Database
from relay.db.models import District, Event, Subscription
from relay.delivery.signing import generate_secret


def start_districts(stack: Stack, count: int) -> tuple[str, list[tuple[str, str]]]:
    """The simulator with ``count`` quiet districts (no events, none generated); returns its
    URL and the (id, token) of each district."""
    port = free_port()
    args = [*RELAY, "--log-level", "WARNING", "simulate", "--port", str(port)]
    args += ["--districts", str(count), "--rate", "0", "--seed", "7", "--rate-limit", "100000"]
    stack.start("simulator", args, cwd=ROOT)
    wait_for_port(port, stack.procs["simulator"], timeout=300)
    url = f"http://127.0.0.1:{port}"
    stack.env["RELAY_CLEVER_API_URL"] = url
    state = httpx.get(f"{url}/_sim/state", timeout=60).json()
    return url, [(d["id"], d["token"]) for d in state["districts"]]


def seed_districts(
    stack: Stack, districts: list[tuple[str, str]], receiver_url: str, subscriptions: int = 1
) -> None:
    """Register the districts (from their earliest event) and ``subscriptions`` subscriptions,
    each at a path of its own under ``receiver_url``: one subscription gets everything; with
    more, district i goes to subscription i mod K alone (its ``districts`` filter), so that
    each event has one delivery and no subscription's in-flight bound holds many back."""

    async def go() -> None:
        db = Database(stack.database_url)
        try:
            async with db.write() as session:
                for k in range(subscriptions):
                    url = f"{receiver_url}/{k}"
                    mine = [d for d, _ in districts[k::subscriptions]] if subscriptions > 1 else []
                    session.add(
                        Subscription(
                            owner="bench", url=url, secret=generate_secret(), districts=mine
                        )
                    )
                for district_id, token in districts:
                    session.add(District(id=district_id, token=token, start_from="earliest"))
        finally:
            await db.dispose()

    asyncio.run(go())


def event_polls(sim_url: str, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
    """Polls (``GET /v3.1/events``) per district in the simulator's request log that started
    between ``since`` and ``until`` (wall clock)."""
    log = httpx.get(f"{sim_url}/_sim/requests", timeout=120).json()["data"]
    return Counter(
        str(r["district"])
        for r in log
        if r["path"] == "/v3.1/events" and since <= r["started_wall"] < until and r["district"]
    )


def wait_all_polled(stack: Stack, sim_url: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    polled = 0
    while time.monotonic() < deadline:
        stack.check_alive()
        polled = len(event_polls(sim_url))
        if polled >= count:
            break
        time.sleep(1)
    return polled


class CpuMeter:
    """CPU seconds (user + system) of some processes between ``start()`` and ``stop()``."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs
        self.before: dict[int, float] = {}

    def _times(self) -> dict[int, float]:
        seconds = {}
        for proc in self.procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[proc.pid] = times.user + times.system
        return seconds

    def start(self) -> None:
        self.before = self._times()

    def stop(self) -> float:
        """The processes alive at both ends (a database backend may come and go)."""
        after = self._times()
        return sum(after[pid] - self.before[pid] for pid in after if pid in self.before)


def pg_backends(database: str) -> list[psutil.Process]:
    """The PostgreSQL backends serving ``database`` (their title names it)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("postgres:") and f" {database} " in cmdline:
            found.append(proc)
    return found


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy, sampling the GIL holder only (what the event loop spends), collapsed stacks."""
    spy = Path(sys.executable).parent / "py-spy"
    args = [str(spy), "record", "--gil", "--format", "raw", "-d", str(int(seconds))]
    args += ["-p", str(pid), "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def inject(sim_url: str, district_ids: list[str], spread: float) -> list[str]:
    """One new event in each district, spread evenly over ``spread`` seconds; their ids."""
    created: list[str] = []

    async def go() -> None:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=sim_url, limits=limits, timeout=120) as client:
            start = time.monotonic()
            sem = asyncio.Semaphore(20)

            async def one(n: int, district_id: str) -> None:
                delay = start + spread * n / len(district_ids) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with sem:
                    path = f"/_sim/districts/{district_id}/events"
                    response = await client.post(path, json={"generate": 1})
                response.raise_for_status()
                created.extend(response.json()["ids"])

            await asyncio.gather(*(one(n, d) for n, d in enumerate(district_ids)))

    asyncio.run(go())
    return created


def wait_arrivals(stack: Stack, receiver: str, expected: int, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        arrivals: dict[str, float] = httpx.get(f"{receiver}/_arrivals", timeout=60).json()
        if len(arrivals) >= expected or time.monotonic() > deadline:
            return arrivals
        stack.check_alive()
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--districts", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="RELAY_POLL_INTERVAL")
    parser.add_argument("--window", type=float, default=60, help="seconds of idle polls counted")
    parser.add_argument("--warmup", type=float, default=10, help="after every district polled")
    parser.add_argument("--spread", type=float, default=20, help="seconds the new events span")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--subscriptions", type=int, default=1, help="K > 1: each district's events to one"
    )
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    parser.add_argument("--pg-prefix", default="relay_bench_", help="throwaway database name")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the workers")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the (first) worker into this file (collapsed)"
    )
    parser.add_argument(
        "--profile-phase", choices=("idle", "events"), default="idle", help="what to profile"
    )
    args = parser.parse_args()
    n, interval = args.districts, args.poll_interval
    extra_env = {"RELAY_POLL_INTERVAL": str(interval)}
    extra_env |= dict(item.split("=", 1) for item in args.env)

    with Stack(args.db, redis_url=args.redis, code=args.code, pg_prefix=args.pg_prefix) as stack:
        with section(f"setup: {args.db}, {n} districts, code {args.code}, logs {stack.workdir}"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver(keep_arrivals=True)
            sim_url, districts = start_districts(stack, n)
            seed_districts(stack, districts, receiver + "/hook", args.subscriptions)
        with section(f"{args.workers} worker(s) at RELAY_POLL_INTERVAL={interval:g}"):
            stack.start_workers(args.workers, extra_env)
            polled = wait_all_polled(stack, sim_url, n, timeout=180)
            print(f"   {polled} of {n} districts polled at least once")
            time.sleep(args.warmup)
        pids = stack.pids()
        workers = [psutil.Process(p) for name, p in pids.items() if name.startswith("worker")]
        # a worker polls in a child process of its own (RELAY_POLL_PROCESS): count it too
        workers += [child for w in workers for child in w.children(recursive=True)]
        meters = {
            "worker": CpuMeter(workers),
            "simulator": CpuMeter([psutil.Process(pids["simulator"])]),
            "postgres": CpuMeter(pg_backends(stack._pg_name or "")),
        }
        with section(f"idle window: {args.window:g}s"):
            httpx.delete(f"{sim_url}/_sim/requests", timeout=30)
            pg_before = stack.pg_counters()
            for meter in meters.values():
                meter.start()
            t0 = time.time()
            spy = None
            if args.profile and args.profile_phase == "idle":
                spy = profile(workers[0].pid, args.window, args.profile)
            time.sleep(args.window)
            if spy is not None:
                spy.wait(30)
            t1 = time.time()
            cpu = {name: meter.stop() for name, meter in meters.items()}
            pg_after = stack.pg_counters()
            polls = event_polls(sim_url, t0, t1)
        with section(f"one new event per district over {args.spread:g}s"):
            ids = [d for d, _ in districts]
            if args.profile and args.profile_phase == "events":
                spy = profile(workers[0].pid, args.spread + 3 * interval, args.profile)
            busy = CpuMeter(workers)
            busy.start()
            created = inject(sim_url, ids, args.spread)
            cpu["worker (events)"] = busy.stop() / args.spread * args.window
            arrivals = wait_arrivals(stack, receiver, n, timeout=120)
            if spy is not None:
                spy.wait(60)
            appeared = asyncio.run(appearances(sim_url, set(created)))
            stored = asyncio.run(stored_at(stack.database_url))

    report(args, polls, cpu, pg_before, pg_after, arrivals, appeared, stored)
    print(f"logs                {stack.workdir}")


async def stored_at(database_url: str) -> dict[str, float]:
    """When each event was stored (its ingest transaction's time), by Clever id."""
    db = Database(database_url)
    try:
        async with db.read() as session:
            rows = (await session.exec(select(Event.id, Event.received_at))).all()
    finally:
        await db.dispose()
    return {i: at.timestamp() for i, at in rows}


def report(
    args: argparse.Namespace,
    polls: Counter[str],
    cpu: dict[str, float],
    pg_before: dict[str, int],
    pg_after: dict[str, int],
    arrivals: dict[str, float],
    appeared: dict[str, float],
    stored: dict[str, float],
) -> None:
    n, interval, window = args.districts, args.poll_interval, args.window
    expected = window / interval
    per_district = sorted(polls.values()) + [0] * (n - len(polls))
    total = sum(per_district)
    low, median = min(per_district), statistics.median(per_district)
    print()
    print(
        f"database            {args.db}, {n} districts, {args.workers} worker(s), "
        f"{args.subscriptions} subscription(s)"
    )
    print(f"poll interval       {interval:g}s; idle window {window:g}s = {expected:g} polls each")
    print(f"polls               {total} ({total / window:.0f}/s of {n / interval:.0f}/s)")
    print(
        f"polls per district  min {low} ({low / expected:.0%}), p10 "
        f"{percentile(per_district, 10):g}, median {median:g} ({median / expected:.0%}); "
        f"never polled {per_district.count(0)}   (target: min >= 90 %)"
    )
    events_cpu = cpu.pop("worker (events)")
    for name, seconds in cpu.items():
        per_poll = seconds / total * 1000 if total else float("nan")
        print(
            f"{name + ' CPU':<19} {seconds:6.1f}s = {seconds / window:5.0%} of a core, "
            f"{per_poll:.2f} ms per poll" + ("   (target <= 1 ms)" if name == "worker" else "")
        )
    if pg_after:
        per = {k: (pg_after[k] - pg_before[k]) / max(total, 1) for k in pg_after}
        print(
            f"PostgreSQL per poll {per['xact_commit']:.3f} commits, {per['tup_updated']:.3f} rows "
            f"updated, {per['tup_fetched']:.3f} fetched, {per['tup_returned']:.1f} returned"
        )
    latencies = [(at - appeared[key.split(" ")[1]]) * 1000 for key, at in arrivals.items()]
    latencies += [inf] * (n - len(latencies))  # never arrived
    to_store = [(stored[i] - at) * 1000 if i in stored else inf for i, at in appeared.items()]
    print(f"new events          {len(arrivals)} of {n} delivered")
    print(f"  worker CPU        {events_cpu / window:.0%} of a core while they appeared")
    print(
        f"  stored after      p50 {percentile(to_store, 50):.0f} ms, p99 "
        f"{percentile(to_store, 99):.0f} ms (appearance to the ingest transaction)"
    )
    print(
        f"latency             p50 {percentile(latencies, 50):.0f} ms, p99 "
        f"{percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms   "
        f"(target p99 <= {(interval + 1) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
