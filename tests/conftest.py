"""Shared fixtures. The database backend comes from ``RELAY_TEST_DATABASE``:
``sqlite`` (default; a fresh file per test) or ``postgresql`` (a throwaway database per run on
``RELAY_TEST_POSTGRES_URL``, default the local server, truncated between tests)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database, crypto
from relay.db import models as _models  # noqa: F401  (registers the tables)
from relay.secrets import RuntimeSecrets
from relay.settings import Settings, load_settings
from tests.support.config import ADMIN_TOKEN, BACKEND, ENCRYPTION_KEY, POSTGRES_SERVER, REDIS_URL
from tests.support.redis_server import REDIS_SERVER, PrivateRedis
from tests.support.servers import ServerThread, serve

# the tests write encrypted columns without an app or a worker of their own
crypto.use(crypto.Keyring.parse(ENCRYPTION_KEY))


def pytest_report_header() -> str:
    return f"relay database backend: {BACKEND}"


async def _admin(sql: str) -> None:
    engine = create_async_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    if BACKEND != "postgresql":
        yield None
        return
    name = f"relay_test_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_SERVER.rsplit("/", 1)[0] + "/" + name

    async def create() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all)
        await engine.dispose()

    asyncio.run(create())
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(postgres_url: str | None, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty, fully migrated database."""
    if postgres_url is None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"

        async def create() -> None:
            db = Database(url)
            async with db.engine.begin() as conn:
                await conn.run_sync(SQLModel.metadata.create_all)
            await db.dispose()

        asyncio.run(create())
        yield url
        return

    async def truncate() -> None:
        engine = create_async_engine(postgres_url)
        names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
        await engine.dispose()

    asyncio.run(truncate())
    yield postgres_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key",
        encryption_key=ENCRYPTION_KEY,
        allow_loopback=True,  # the receivers are on 127.0.0.1
        _env_file=None,
    )


@pytest.fixture
def runtime() -> RuntimeSecrets:
    return RuntimeSecrets(
        admin_token=ADMIN_TOKEN, secret_key="test-secret-key", encryption_key=ENCRYPTION_KEY
    )


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A Redis database of its own for the test (flushed before and after)."""
    client = aioredis.from_url(REDIS_URL)  # type: ignore[no-untyped-call]
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A ``redis-server`` of the test's own (no persistence), free to restart and flush."""
    if REDIS_SERVER is None:
        pytest.skip("no redis-server on PATH: scripts/services installs the one the suite needs")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def simulator() -> Iterator[tuple[Simulator, ServerThread]]:
    """A one-district Clever simulator on 127.0.0.1."""
    sim = Simulator(SimulatorConfig(districts=1, seed=7))
    with serve(create_app(sim)) as server:
        yield sim, server
