"""A worker in the test's event loop, its parts without a worker, and the rows it works on,
against real Redis, a real database and receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from relay.db import Database
from relay.db.models import District, Subscription
from relay.delivery.signing import generate_secret
from relay.queue import open_redis
from relay.settings import Settings
from workers.context import WorkerContext
from workers.process import run_worker


def worker_settings(settings: Settings, clever_url: str, **overrides: Any) -> Settings:
    values = settings.model_dump() | {
        "clever_api_url": clever_url,
        "poll_interval": 0.2,
        "poll_lease": 3.0,
        "retry_schedule": "0.2,0.2,0.2,0.2",
        "delivery_timeout": 2.0,
        # polling in this loop, at once: these tests are about what a poller does (some race
        # Clever's retention), not about where it runs; tests/workers and tests/faults run
        # real worker processes with their polling child
        "poll_process": False,
    }
    return Settings(**(values | overrides), _env_file=None)  # type: ignore[call-arg]


@asynccontextmanager
async def running_worker(settings: Settings, redis_url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, redis_url, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def add_district(db: Database, district_id: str, token: str, **fields: Any) -> None:
    async with db.write() as session:
        session.add(District(id=district_id, token=token, **fields))


async def add_subscription(db: Database, url: str, **fields: Any) -> Subscription:
    sub = Subscription(**{"owner": "test", "secret": generate_secret(), **fields}, url=url)
    async with db.write() as session:
        session.add(sub)
    return sub


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.1
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@asynccontextmanager
async def worker_context(settings: Settings, redis_url: str) -> AsyncIterator[WorkerContext]:
    """What a worker's loops share, without running them."""
    pool = await open_redis(redis_url)
    app = await WorkerContext.open(settings, pool)
    try:
        yield app
    finally:
        await app.close()
        await pool.aclose()
