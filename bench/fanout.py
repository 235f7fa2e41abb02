"""Benchmark: a fan-out's delivery rate with and without many quiet districts polled (by hand).

    .venv/bin/python bench/fanout.py [--subscriptions 300] [--events 20] [--districts 1000]
        [--interval 2] [--redis redis://127.0.0.1:6379/15] [--code DIR] [--worker-env K=V]

One ``relay worker`` on a throwaway PostgreSQL database, the fast counting receiver
(uvicorn + httptools + uvloop) with ``--subscriptions`` subscriptions to everything, and the
Clever simulator with one busy district and ``--districts`` quiet ones (no events at all).
The same fan-out runs in pairs, on the same worker: ``--events`` new events in the busy
district (subscriptions x events deliveries) while it is the only district polled (the quiet
ones paused), then again once every quiet district is active and has been polled (every
``--interval`` seconds); ``--rounds`` pairs, as the machine is shared and drifts.
Deliveries/s is measured at the receiver, first delivery to last; the ratio of the means,
polled/alone, is the issue-11 target (>= 0.80). Each phase also reports the worker's CPU
(its child processes included), the simulator's (Clever is remote in production, but here
its ~N/interval GETs/s share the machine's two cores), the whole machine's busy CPU (other
agents included) and the Clever polls made during the fan-out (expected: N / interval per
second).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import (
    DEFAULT_REDIS,
    ROOT,
    Stack,
    cpu_seconds,
    machine_busy_seconds,
    section,
    simulated_districts,
    wait_for_deliveries,
)


@dataclass
class Phase:
    name: str
    deliveries: int
    seconds: float  # first delivery to last, at the receiver
    wall: float  # from the events' creation to the last delivery
    worker_cpu: float  # the worker process and its children
    poller_cpu: float  # its children (polling, when RELAY_POLL_PROCESS is on)
    simulator_cpu: float
    machine_cpu: float
    polls: int  # Clever GETs from the worker during the wall window

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        wall = max(self.wall, 1e-9)
        return (
            f"{self.name:<14} {self.rate:6.0f}/s  {self.deliveries} in {self.seconds:5.2f}s; "
            f"worker {self.worker_cpu / wall:4.0%} of a core (children "
            f"{self.poller_cpu / wall:4.0%}), simulator "
            f"{self.simulator_cpu / wall:4.0%}, machine {self.machine_cpu / wall:4.0%} of 2; "
            f"{self.polls / wall:.0f} polls/s"
        )


class Requests:
    """The simulator's request log, read incrementally."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seq = 0

    def since_last(self) -> list[dict[str, object]]:
        data = httpx.get(f"{self.url}/_sim/requests", params={"since": self.seq}, timeout=60)
        entries: list[dict[str, object]] = data.json()["data"]
        if entries:
            self.seq = int(str(entries[-1]["seq"]))
        return entries


def polls(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in entries if e["method"] == "GET" and e["district"]]


@dataclass
class Run:
    stack: Stack
    sim: str
    receiver: str
    district: str  # the busy one
    events: int
    expected: int
    log: Requests
    timeout: float


def fan_out(run: Run, name: str) -> Phase:
    stack, sim, receiver, district, log = run.stack, run.sim, run.receiver, run.district, run.log
    httpx.post(f"{receiver}/_reset", timeout=30).raise_for_status()
    log.since_last()
    worker, simulator = stack.procs["worker-0"].pid, stack.procs["simulator"].pid

    def cpu() -> tuple[float, float, float, float]:
        tree = cpu_seconds(worker)
        alone = cpu_seconds(worker, children=False)
        return tree, tree - alone, cpu_seconds(simulator), machine_busy_seconds()

    before = cpu()
    started = time.time()
    body = {"generate": run.events}
    httpx.post(f"{sim}/_sim/districts/{district}/events", json=body, timeout=30).raise_for_status()
    stats = wait_for_deliveries(stack, receiver, run.expected, run.timeout, every=0.2)
    after = cpu()
    ended = stats["last"] or time.time()
    window = [e for e in polls(log.since_last()) if started <= float(str(e["started_wall"]))]
    if stats["count"] < run.expected:
        print(f"   INCOMPLETE: {stats['count']} of {run.expected} before the timeout")
    return Phase(
        name,
        stats["count"],
        (stats["last"] or 0) - (stats["first"] or 0),
        ended - started,
        *(b - a for a, b in zip(before, after, strict=True)),
        len(window),
    )


def wait_until_polled(log: Requests, districts: set[str], timeout: float, times: int = 2) -> None:
    """Until every one of ``districts`` was polled ``times`` times since the last look (a
    lease taken and a steady interval begun)."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in polls(log.since_last()):
            seen[str(entry["district"])] = seen.get(str(entry["district"]), 0) + 1
        if sum(seen.get(d, 0) >= times for d in districts) == len(districts):
            return
        time.sleep(0.5)
    missing = sum(seen.get(d, 0) < times for d in districts)
    print(f"   {missing} of {len(districts)} districts not polled {times}x yet; measuring anyway")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=300)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--districts", type=int, default=1000, help="quiet districts polled")
    parser.add_argument("--interval", type=float, default=2.0, help="RELAY_POLL_INTERVAL")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--timeout", type=float, default=300, help="per fan-out (s)")
    parser.add_argument("--rounds", type=int, default=2, help="alone/polled pairs (noise)")
    parser.add_argument(
        "--settle", type=float, default=120, help="max wait for every quiet district's poll"
    )
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    parser.add_argument(
        "--worker-env", action="append", default=[], metavar="K=V", help="extra worker env"
    )
    args = parser.parse_args()
    expected = args.subscriptions * args.events
    extra = dict(kv.split("=", 1) for kv in args.worker_env)

    with Stack("postgresql", redis_url=args.redis, code=args.code, pg_prefix="fanout_") as stack:
        with section(f"setup: {args.subscriptions} subscriptions, {args.districts} quiet"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver()
            sim, busy, token = stack.start_simulator(0, districts=args.districts + 1)
            quiet = [d for d in simulated_districts(sim) if d[0] != busy]
            stack.seed(busy, token, receiver + "/hook", args.subscriptions)
            stack.start_workers(1, {"RELAY_POLL_INTERVAL": str(args.interval)} | extra)
            log = Requests(sim)
            wait_until_polled(log, {busy}, timeout=120)
        run = Run(stack, sim, receiver, busy, args.events, expected, log, args.timeout)
        quiet_ids = [d for d, _ in quiet]
        with section(f"registering {len(quiet)} quiet districts, paused"):
            stack.add_districts(quiet, status="paused")
        phases: dict[str, list[Phase]] = {"alone": [], "polled": []}
        for round_ in range(1, args.rounds + 1):
            for name in phases:
                title = f"round {round_}, {name}: {args.events} events x {args.subscriptions} subs"
                with section(title):
                    stack.set_district_status(quiet_ids, "paused" if name == "alone" else "active")
                    if name == "polled":
                        wait_until_polled(log, set(quiet_ids), timeout=args.settle, times=1)
                    else:
                        time.sleep(args.interval * 2)  # pollers see the pause and stop
                    phases[name].append(fan_out(run, f"{name} #{round_}"))
                    print("   " + phases[name][-1].line(), flush=True)
    report(phases, args)


def report(phases: dict[str, list[Phase]], args: argparse.Namespace) -> None:
    print()
    for name in phases:
        for phase in phases[name]:
            print(phase.line())
    alone = sum(p.rate for p in phases["alone"]) / len(phases["alone"])
    polled = sum(p.rate for p in phases["polled"]) / len(phases["polled"])
    rounds = ", ".join(
        f"{p.rate / a.rate:.2f}" for a, p in zip(phases["alone"], phases["polled"], strict=True)
    )
    print(f"alone  (mean)  {alone:6.0f}/s")
    print(f"polled (mean)  {polled:6.0f}/s  with {args.districts} quiet districts")
    print(f"polled / alone {polled / alone:6.2f}   (target >= 0.80; by round: {rounds})")
    print(f"expected polls/s {args.districts / args.interval:.0f}")


if __name__ == "__main__":
    main()
