"""Benchmark: a churn soak, subscriptions created, rotated and deleted under load (by hand).

    .venv/bin/python bench/churn.py [--minutes 30] [--rate 2] [--alive 75] [--workers 2]
        [--lifetime 60 120] [--rotate-every 30] [--redis redis://127.0.0.1:6379/15]

On a throwaway PostgreSQL database: the Clever simulator producing ``--rate`` events/s in one
district, a receiver keeping every arrival per path, ``relay serve`` and ``--workers``
``relay worker`` processes. A churn driver keeps about ``--alive`` subscriptions to
everything through the REST API, each at a receiver path of its own, living a random
``--lifetime`` seconds before its DELETE, and rotates one's secret every ``--rotate-every``
seconds; it records when each DELETE returned (wall clock). Deliveries/s ≈ rate x alive.

Every minute it prints a sample: each relay process's RSS and its TCP connections to Redis
and PostgreSQL (psutil), Redis's ``connected_clients`` (the whole server, shared with others)
and its ``CLIENT LIST`` entries on the bench DB (with how many idled over a minute), and
``pg_stat_activity`` for the bench database. At the end the remaining subscriptions are
deleted too, and every request that arrived at a path after its DELETE returned is counted
(acceptance: 0; and RSS and connections flat).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import DEFAULT_REDIS, ROOT, Stack, _pg_admin, receiver_stats, section


@dataclass
class Churn:
    """What the driver did: per receiver path, when its DELETE was sent and returned."""

    api: httpx.AsyncClient
    receiver: str
    created: int = 0
    rotated: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)
    alive: dict[str, tuple[str, float]] = field(default_factory=dict)  # id → (path, expiry)
    delete_sent: dict[str, float] = field(default_factory=dict)  # path → wall clock
    delete_returned: dict[str, float] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    busy: int = 0  # 503s retried
    calls: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(10))

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request, at most 10 at a time, retried while the API says it is busy (503): the
        churn must not lose a DELETE to the API's own overload protection."""
        async with self.calls:
            for _ in range(20):
                response = await self.api.request(method, url, **kwargs)
                if response.status_code != 503:
                    break
                self.busy += 1
                await asyncio.sleep(float(response.headers.get("retry-after", 1)))
        return response

    async def create(self, lifetime: float) -> None:
        path = f"/s/{self.created}"
        self.created += 1
        response = await self.call("POST", "/v1/subscriptions", json={"url": self.receiver + path})
        if response.status_code != 201:
            self.errors.append(f"create {response.status_code} {response.text[:200]}")
            return
        self.alive[response.json()["id"]] = (path, time.monotonic() + lifetime)

    async def delete(self, sub_id: str) -> None:
        path, _ = self.alive.pop(sub_id)
        self.delete_sent[path] = time.time()
        response = await self.call("DELETE", f"/v1/subscriptions/{sub_id}")
        if response.status_code != 204:
            self.errors.append(f"delete {response.status_code} {response.text[:200]}")
            return
        self.delete_returned[path] = time.time()
        self.deleted += 1

    async def rotate(self) -> None:
        sub_id = random.choice(list(self.alive))
        response = await self.call("POST", f"/v1/subscriptions/{sub_id}/rotate-secret")
        if response.status_code != 200:
            self.errors.append(f"rotate {response.status_code} {response.text[:200]}")
            return
        self.rotated += 1

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def delete_expired(self) -> None:
        now = time.monotonic()
        for sub_id in [i for i, (_, expiry) in self.alive.items() if expiry <= now]:
            self.spawn(self.delete(sub_id))

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks))


async def drive(churn: Churn, args: argparse.Namespace, until: float) -> None:
    low, high = args.lifetime
    for _ in range(args.alive):  # staggered, so that deletions start at once
        await churn.create(random.uniform(0, high))
    per_second = args.alive / ((low + high) / 2)  # creations that keep ~alive alive
    next_rotation = time.monotonic() + args.rotate_every
    while time.monotonic() < until:
        churn.delete_expired()
        if len(churn.alive) < args.alive:
            churn.spawn(churn.create(random.uniform(low, high)))
        if time.monotonic() >= next_rotation and churn.alive:
            churn.spawn(churn.rotate())
            next_rotation += args.rotate_every
        await asyncio.sleep(random.expovariate(per_second))


# -- samples --------------------------------------------------------------------------------


def connections(pid: int) -> tuple[int, int]:
    """A process's established TCP connections to Redis (6379) and PostgreSQL (5432)."""
    ports = [c.raddr.port for c in psutil.Process(pid).net_connections("tcp") if c.raddr]
    return ports.count(6379), ports.count(5432)


async def sample(stack: Stack, redis: Redis, db_index: int, minute: float) -> dict[str, Any]:
    row: dict[str, Any] = {"minute": minute}
    for name, pid in stack.pids().items():
        if name == "api" or name.startswith("worker"):
            rss = psutil.Process(pid).memory_info().rss / 2**20
            row[name] = (rss, *connections(pid))
    row["connected_clients"] = (await redis.info("clients"))["connected_clients"]
    mine = [
        c for c in await redis.client_list() if c["db"] == str(db_index) and c["name"] != "bench"
    ]
    row["client_list"] = len(mine)
    row["idle_over_60s"] = sum(int(c["idle"]) > 60 for c in mine)
    query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{stack._pg_name}'"
    row["pg"] = (await _pg_admin(query, fetch=True))[0]
    return row


def print_sample(row: dict[str, Any], names: list[str]) -> None:
    cells = [f"{row['minute']:6.1f}"]
    cells += [f"{row[n][0]:7.1f} {row[n][1]:3d} {row[n][2]:3d}" for n in names]
    cells += [f"{row['connected_clients']:7d} {row['client_list']:5d} {row['idle_over_60s']:4d}"]
    cells += [f"{row['pg']:4d}"]
    print(" | ".join(cells), flush=True)


async def soak(
    stack: Stack, api: httpx.Client, receiver: str, args: argparse.Namespace
) -> tuple[Churn, list[dict[str, Any]]]:
    """The churn and a sample a minute for ``--minutes``; then the rest deleted too."""
    client = httpx.AsyncClient(base_url=api.base_url, headers=api.headers, timeout=60)
    churn = Churn(client, receiver)
    redis = Redis.from_url(args.redis, client_name="bench")
    db_index = int(args.redis.rsplit("/", 1)[1])
    names = sorted(n for n in stack.pids() if n == "api" or n.startswith("worker"))
    print("minute | " + " | ".join(f"{n:>7} RSS MiB, redis, pg conns" for n in names), end="")
    print(" | redis: server clients, bench-db clients, idle>60s | pg_stat_activity", flush=True)
    started = time.monotonic()
    until = started + args.minutes * 60
    driver = asyncio.create_task(drive(churn, args, until))
    samples = []
    try:
        while True:
            row = await sample(stack, redis, db_index, (time.monotonic() - started) / 60)
            samples.append(row)
            print_sample(row, names)
            if time.monotonic() >= until:
                break
            for _ in range(60):
                stack.check_alive()
                if driver.done():
                    driver.result()  # raises what stopped it
                await asyncio.sleep(min(1, max(0, until - time.monotonic())))
        await driver
        await churn.settle()
        for sub_id in list(churn.alive):
            churn.spawn(churn.delete(sub_id))
        await churn.settle()
    finally:
        await redis.aclose()
        await client.aclose()
    return churn, samples


def late_requests(churn: Churn) -> tuple[list[tuple[str, float]], int]:
    """Requests that arrived after their path's DELETE returned (path, ms after), and how many
    arrived while a DELETE was waiting (sent, not yet returned: allowed)."""
    paths = httpx.get(f"{churn.receiver}/_paths", timeout=120).json()
    late, during = [], 0
    for path, arrivals in paths.items():
        returned = churn.delete_returned.get(path)
        sent = churn.delete_sent.get(path, float("inf"))
        for at in arrivals:
            if returned is not None and at > returned:
                late.append((path, (at - returned) * 1000))
            elif at > sent:
                during += 1
    return late, during


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=2, help="events/s")
    parser.add_argument("--alive", type=int, default=75, help="subscriptions kept alive")
    parser.add_argument("--lifetime", type=float, nargs=2, default=(60, 120), help="s: min max")
    parser.add_argument("--rotate-every", type=float, default=30, help="s between rotations")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()

    with Stack("postgresql", redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: postgresql, {args.workers} worker(s), relay serve"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver(keep_arrivals=True)
            sim_url, district_id, token = stack.start_simulator(0)
            api = stack.start_api()
            district = {"id": district_id, "token": token, "start_from": "earliest"}
            api.post("/v1/districts", json=district).raise_for_status()
            stack.start_workers(args.workers)
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": args.rate})
        with section(f"churn soak: {args.minutes:g} min, {args.rate:g} events/s"):
            churn, samples = asyncio.run(soak(stack, api, receiver, args))
        with section("events stopped, 20 s for stragglers"):
            httpx.post(f"{sim_url}/_sim/rate", json={"events_per_second": 0})
            time.sleep(20)
            stack.check_alive()
            late, during = late_requests(churn)
            delivered = receiver_stats(receiver)["count"]

    report(args, churn, samples, late, during, delivered)


def report(
    args: argparse.Namespace,
    churn: Churn,
    samples: list[dict[str, Any]],
    late: list[tuple[str, float]],
    during: int,
    delivered: int,
) -> None:
    print()
    print(
        f"subscriptions       {churn.created} created, {churn.rotated} rotated, "
        f"{churn.deleted} deleted ({len(churn.errors)} API errors, {churn.busy} 503s retried)"
    )
    for error in churn.errors[:10]:
        print(f"  {error}")
    seconds = args.minutes * 60
    print(f"deliveries          {delivered} ({delivered / seconds:.0f}/s over the soak)")
    print(f"during a DELETE     {during} requests (sent before it returned: allowed)")
    print(
        f"after DELETE        {len(late)} requests to {len({p for p, _ in late})} paths (target 0)"
    )
    for path, ms in sorted(late, key=lambda x: x[1])[:20]:
        print(f"  {path}: {ms:.0f} ms after its DELETE returned")
    if len(samples) >= 3:  # growth from the second sample (warmed up) to the last
        first, last = samples[1], samples[-1]
        minutes = last["minute"] - first["minute"]
        for name in [k for k in first if k == "api" or k.startswith("worker")]:
            print(
                f"{name:<19} RSS {first[name][0]:.1f} → {last[name][0]:.1f} MiB over "
                f"{minutes:.0f} min; redis conns {first[name][1]} → {last[name][1]}, "
                f"pg conns {first[name][2]} → {last[name][2]}"
            )
        print(f"redis bench-db      clients {first['client_list']} → {last['client_list']}")
        print(f"pg_stat_activity    {first['pg']} → {last['pg']}")


if __name__ == "__main__":
    main()
