"""The processes an end-to-end benchmark runs: a throwaway database, the Clever simulator,
counting webhook receivers, ``relay serve`` and ``relay worker`` subprocesses. Shared by
``throughput.py``, ``latency.py``, ``backlog.py``, ``neighbours.py`` and ``churn.py``; not a
test helper (the tests have ``tests/support``).

Every process is a subprocess so each gets its own core (this machine has two) and its RSS
can be sampled on its own; everything started here is stopped by ``Stack.close()``, and the
throwaway PostgreSQL database is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import col, update  # noqa: E402

from relay.db import Database, crypto  # noqa: E402
from relay.db.models import District, Subscription  # noqa: E402
from relay.delivery.signing import generate_secret  # noqa: E402

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
RELAY = [sys.executable, "-m", "relay.cli"]
ADMIN_TOKEN = "bench-admin-token"
#: the workers' RELAY_ENCRYPTION_KEY; this process writes subscriptions and districts too
ENCRYPTION_KEY = "mjmt_aJkhmTu6Q_kAvQEMmpD5nlbmFztTBwki7YOyHc="
crypto.use(crypto.Keyring.parse(ENCRYPTION_KEY))

# A raw ASGI receiver: 204 for every POST, counting them and keeping the first arrival of
# each (path, webhook-id) and every arrival per path: wall clock, comparable with the
# simulator's appearance times and with the time a bench's DELETE returned. A POST to a path
# under the hang prefix (argv 3, if any) gets no answer until the client gives up.
# GET /_stats gives the counters, GET /_arrivals and /_paths the arrival times, POST /_reset
# clears them.
RECEIVER = r"""
import json, sys, time, uvicorn

state = {"count": 0, "first": None, "last": None, "arrivals": {}, "paths": {},
         "keep": sys.argv[2] == "1"}
HANG = sys.argv[3] if len(sys.argv) > 3 else ""

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    path, body, status = scope["path"], b"", 204
    if scope["method"] == "POST" and path != "/_reset":
        now = time.time()
        state["count"] += 1
        state["first"] = state["first"] or now
        state["last"] = now
        if state["keep"]:
            state["paths"].setdefault(path, []).append(now)
            for name, value in scope["headers"]:
                if name == b"webhook-id":
                    state["arrivals"].setdefault(path + " " + value.decode(), now)
        if HANG and path.startswith(HANG):
            while (await receive())["type"] != "http.disconnect":
                pass
            return
    elif path == "/_reset":
        state.update(count=0, first=None, last=None, arrivals={}, paths={})
    elif path == "/_stats":
        body, status = json.dumps({k: state[k] for k in ("count", "first", "last")}).encode(), 200
    elif path in ("/_arrivals", "/_paths"):
        body, status = json.dumps(state[path[2:]]).encode(), 200
    headers = [(b"content-type", b"application/json")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools", lifespan="off", backlog=4096)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not listen on {port}")
        time.sleep(0.05)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@dataclass
class Stack:
    """One benchmark run's processes. Use as a context manager."""

    backend: str  # sqlite | postgresql
    redis_url: str = DEFAULT_REDIS
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="relay-bench-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    database_url: str = ""
    _pg_name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    code: Path = ROOT  # the relay source tree the subprocesses run (another one: "before")
    pg_prefix: str = "relay_bench_"  # the throwaway PostgreSQL database's name, then random

    def __enter__(self) -> Stack:
        # a SIGTERM (from ``timeout``, say) still runs __exit__, which stops the subprocesses
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- database ---------------------------------------------------------------------------

    def create_database(self) -> str:
        if self.backend == "sqlite":
            self.database_url = f"sqlite+aiosqlite:///{self.workdir / 'relay.db'}"
        else:
            self._pg_name = f"{self.pg_prefix}{secrets.token_hex(4)}"
            _run(_pg_admin(f'CREATE DATABASE "{self._pg_name}"'))
            self.database_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self._pg_name
        self.env = self._base_env()
        subprocess.run(
            [*RELAY, "migrate"], env=self.env, check=True, capture_output=True, cwd=self.code
        )
        return self.database_url

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "CLEVER_"))}
        return env | {
            "RELAY_DATABASE_URL": self.database_url,
            "RELAY_REDIS_URL": self.redis_url,
            "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "RELAY_SECRET_KEY": "bench-secret-key",
            "RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
            "RELAY_DATA_DIR": str(self.workdir / "data"),
            "RELAY_LOG_FORMAT": "json",
            "RELAY_ALLOW_LOOPBACK": "true",  # the receiver is on 127.0.0.1
        }

    def seed(
        self,
        district_id: str,
        token: str,
        receiver_url: str,
        subscriptions: int,
        ordered: bool = False,
    ) -> None:
        """K subscriptions to everything, each at a path of its own, and the district from its
        earliest event."""

        async def go() -> None:
            db = Database(self.database_url)
            try:
                async with db.write() as session:
                    for k in range(subscriptions):
                        session.add(
                            Subscription(
                                owner="bench",
                                url=f"{receiver_url}/{k}",
                                secret=generate_secret(),
                                ordered=ordered,
                            )
                        )
                    session.add(District(id=district_id, token=token, start_from="earliest"))
            finally:
                await db.dispose()

        _run(go())

    def add_districts(self, districts: list[tuple[str, str]], status: str = "active") -> None:
        """Register (id, token) districts from their latest event, in one transaction."""

        async def go() -> None:
            db = Database(self.database_url)
            try:
                async with db.write() as session:
                    for district_id, token in districts:
                        session.add(District(id=district_id, token=token, status=status))
            finally:
                await db.dispose()

        _run(go())

    def set_district_status(self, district_ids: list[str], status: str) -> None:
        """Pause or resume districts (a poller stops at its next poll of a paused one)."""

        async def go() -> None:
            db = Database(self.database_url)
            try:
                async with db.write() as session:
                    await session.exec(
                        update(District)
                        .where(col(District.id).in_(district_ids))
                        .values(status=status)
                    )
            finally:
                await db.dispose()

        _run(go())

    def flush_redis(self) -> None:
        async def go() -> None:
            from redis.asyncio import Redis

            client = Redis.from_url(self.redis_url)
            try:
                await client.flushdb()
            finally:
                await client.aclose()

        _run(go())

    # -- processes --------------------------------------------------------------------------

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``cwd`` (default ``code``) is the source tree ``python -m relay.cli`` runs."""
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            args,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd or self.code,
        )

    def start_receiver(
        self, keep_arrivals: bool = False, name: str = "receiver", hang: str = ""
    ) -> str:
        """A receiver (``hang``: paths under it never answer); returns its URL."""
        port = free_port()
        args = [sys.executable, "-c", RECEIVER, str(port), str(int(keep_arrivals)), hang]
        self.start(name, args)
        wait_for_port(port, self.procs[name])
        return f"http://127.0.0.1:{port}"

    def start_api(self) -> httpx.Client:
        """``relay serve`` (after the simulator: it checks district tokens there); returns a
        client of it with the admin token."""
        port = free_port()
        self.start("api", [*RELAY, "serve", "--port", str(port)])
        wait_for_port(port, self.procs["api"], timeout=60)
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60)

    def start_simulator(
        self, backlog: int, rate: float = 0.0, districts: int = 1
    ) -> tuple[str, str, str]:
        """The simulator with ``districts`` districts; returns (url, first district's id,
        its token); :func:`simulated_districts` lists them all."""
        port = free_port()
        args = [*RELAY, "--log-level", "WARNING", "simulate", "--port", str(port)]
        args += ["--districts", str(districts), "--backlog", str(backlog), "--rate", str(rate)]
        args += ["--seed", "7", "--rate-limit", "100000"]
        self.start("simulator", args)
        wait_for_port(port, self.procs["simulator"], timeout=120)
        url = f"http://127.0.0.1:{port}"
        self.env["RELAY_CLEVER_API_URL"] = url
        state = httpx.get(f"{url}/_sim/state", timeout=30).json()
        district = state["districts"][0]
        return url, district["id"], district["token"]

    def start_workers(self, count: int, extra_env: dict[str, str] | None = None) -> None:
        env = self.env | (extra_env or {})
        for i in range(count):
            self.start(f"worker-{i}", [*RELAY, "worker"], env)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self, name: str, timeout: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def pg_counters(self) -> dict[str, int]:
        """PostgreSQL's cumulative counters for the bench database (transactions, rows)."""
        if not self._pg_name:
            return {}
        sql = (
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, "
            f"tup_updated FROM pg_stat_database WHERE datname = '{self._pg_name}'"
        )
        return dict(_run(_pg_admin(sql, fetch=True)))

    def close(self) -> None:
        for name in [n for n in self.procs if n.startswith("worker")]:
            self.stop(name)
        for name in list(self.procs):
            self.stop(name, timeout=10)
        if self._pg_name:
            with contextlib.suppress(Exception):
                _run(_pg_admin(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))
            self._pg_name = None


async def _pg_admin(sql: str, fetch: bool = False) -> Any:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        if fetch:
            return await conn.fetchrow(sql)
        return await conn.execute(sql)
    finally:
        await conn.close()


def receiver_stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/_stats", timeout=30).json())


def wait_for_deliveries(
    stack: Stack, receiver_url: str, expected: int, timeout: float, every: float = 0.5
) -> dict[str, Any]:
    """Poll the receiver until ``expected`` POSTs arrived (or ``timeout``); the last stats."""
    deadline = time.monotonic() + timeout
    stats = receiver_stats(receiver_url)
    while stats["count"] < expected and time.monotonic() < deadline:
        stack.check_alive()
        time.sleep(every)
        stats = receiver_stats(receiver_url)
    return stats


def simulated_districts(simulator_url: str) -> list[tuple[str, str]]:
    """Every district of the simulator: (id, token)."""
    state = httpx.get(f"{simulator_url}/_sim/state", timeout=60).json()
    return [(d["id"], d["token"]) for d in state["districts"]]


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU (user + system) of ``pid`` and (``children``) of its live descendants so far: a
    ``relay worker`` may run part of its work in child processes."""
    tick = os.sysconf("SC_CLK_TCK")
    tree: dict[int, list[int]] = {}
    usage: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(entry.name)
        tree.setdefault(int(fields[1]), []).append(child)
        usage[child] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += usage.get(current, 0.0)
        todo += tree.get(current, []) if children else []
    return total


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (all processes, any agent)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    start = time.perf_counter()
    print(f"-- {title}", flush=True)
    yield
    print(f"   ({time.perf_counter() - start:.1f}s)", flush=True)
