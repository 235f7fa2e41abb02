"""The relay as real processes: ``relay serve`` and ``relay worker`` subprocesses on the
test's database and Redis, driven through the REST API, and what the tests ask of the
database while it runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func
from sqlmodel import col, select

from relay.db import Database
from relay.db.models import Delivery
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN, ENCRYPTION_KEY
from tests.support.processes import RelayProcess
from tests.support.receiver import Receiver
from tests.support.servers import free_port
from tests.support.worker import wait_for

FAST = {
    "RELAY_POLL_INTERVAL": "0.2",
    "RELAY_POLL_LEASE": "3",
    "RELAY_RETRY_SCHEDULE": "0.5,0.5,1",
    "RELAY_DELIVERY_TIMEOUT": "2",
    "RELAY_RECONCILE_INTERVAL": "2",
}


@dataclass
class Cluster:
    """``relay serve`` plus workers; ``api`` is an admin client for the served API."""

    env: dict[str, str]
    logs: Path
    api: httpx.Client
    workers: list[RelayProcess] = field(default_factory=list)

    def start_worker(self) -> RelayProcess:
        log = self.logs / f"worker-{len(self.workers)}.log"
        worker = RelayProcess(["worker"], self.env, log)
        self.workers.append(worker)
        return worker

    def subscribe(self, url: str, **filters: Any) -> dict[str, Any]:
        response = self.api.post("/v1/subscriptions", json={"url": url, **filters})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def add_district(self, district_id: str, token: str) -> None:
        body = {"id": district_id, "token": token, "start_from": "earliest"}
        response = self.api.post("/v1/districts", json=body)
        assert response.status_code == 201, response.text

    def output(self) -> str:
        return "\n".join(w.output()[-3000:] for w in self.workers)

    @contextmanager
    def replica(self, encryption_key: str, name: str = "replica") -> Iterator[httpx.Client]:
        """Another ``relay serve`` on the same database with ``RELAY_ENCRYPTION_KEY`` set to
        ``encryption_key`` (an admin client for it): the replica whose writes the other
        processes may not read."""
        port = free_port()
        env = self.env | {"RELAY_ENCRYPTION_KEY": encryption_key}
        process = RelayProcess(["serve", "--port", str(port)], env, self.logs / f"{name}.log")
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10
            ) as client:
                _wait_until_serving(client, process)
                yield client
        finally:
            process.stop()

    async def settled(self, db: Database, expected: int, timeout: float, *context: Any) -> None:
        """Wait until every expected delivery exists and none is waiting; else fail with
        the statuses, ``context`` and the workers' output."""
        try:
            await wait_for(lambda: deliveries_settled(db, expected), timeout)
        except AssertionError:
            raise AssertionError((await statuses(db), *context, self.output())) from None


@contextmanager
def cluster(
    settings: Settings, redis_url: str, clever_url: str, logs: Path, workers: int = 2
) -> Iterator[Cluster]:
    env = FAST | {
        "RELAY_DATABASE_URL": settings.database_url,
        "RELAY_REDIS_URL": redis_url,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_SECRET_KEY": "test-secret-key",
        "RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "RELAY_DATA_DIR": str(logs / "data"),
        "RELAY_CLEVER_API_URL": clever_url,
        "RELAY_LOG_LEVEL": "INFO",
    }
    port = free_port()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with ExitStack() as stack:
        api = RelayProcess(["serve", "--port", str(port)], env, logs / "serve.log")
        stack.callback(api.stop)
        client = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)
        )
        _wait_until_serving(client, api)
        running = Cluster(env, logs, client)
        for _ in range(workers):
            running.start_worker()
        try:
            yield running
        finally:
            for worker in running.workers:
                worker.stop()


def _wait_until_serving(client: httpx.Client, api: RelayProcess) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert api.proc.poll() is None, api.output()
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("relay serve did not start: " + api.output())


async def count(db: Database, query: Any) -> int:
    async with db.read() as session:
        return int((await session.exec(query)).one())


async def deliveries_settled(db: Database, expected: int) -> bool:
    """Every expected delivery exists and none is still waiting."""
    total = await count(db, select(func.count()).select_from(Delivery))
    waiting = await count(
        db,
        select(func.count())
        .select_from(Delivery)
        .where(col(Delivery.status).in_(["pending", "retrying"])),
    )
    return total >= expected and waiting == 0


async def statuses(db: Database) -> dict[str, int]:
    async with db.read() as session:
        rows = (
            await session.exec(select(Delivery.status, func.count()).group_by(Delivery.status))
        ).all()
    return {str(s): int(n) for s, n in rows}


def duplicates(receiver: Receiver) -> int:
    ids = receiver.event_ids()
    return len(ids) - len(set(ids))
