"""Fixtures of the fault scenarios: the scenario factory, a private ``redis-server`` to restart
and flush, and a private PostgreSQL cluster to restart (never the shared servers)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from relay.db import Database
from tests.support.config import BACKEND
from tests.support.postgres import PrivatePostgres, postgres_bin
from tests.support.scenario import Scenario, ScenarioFactory


@pytest.fixture
def make_scenario(
    db: Database, database_url: str, redis_url: str, tmp_path: Path
) -> ScenarioFactory:
    """``make_scenario(seed=…, env=…, redis_url=…, db=…)``: a :class:`Scenario` on the test's
    database and Redis unless told otherwise; use it as a context manager."""

    def make(**kwargs: Any) -> Scenario:
        values: dict[str, Any] = {
            "db": db,
            "database_url": database_url,
            "redis_url": redis_url,
            "logs": tmp_path,
        }
        return Scenario(**(values | kwargs))

    return make


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A private PostgreSQL cluster with the relay's tables (PostgreSQL backend only)."""
    if BACKEND != "postgresql":
        pytest.skip(
            "PostgreSQL restart is a PostgreSQL-backend scenario "
            "(RELAY_TEST_DATABASE=postgresql); SQLite has no server to restart"
        )
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no initdb/pg_ctl found (PATH or /usr/lib/postgresql/*/bin)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root needs runuser to start PostgreSQL as 'postgres'")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root needs a 'postgres' OS user to run PostgreSQL as")
    server = PrivatePostgres(bindir)
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        engine = create_async_engine(server.url)
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            await conn.run_sync(SQLModel.metadata.create_all)
        await engine.dispose()
        yield server
    finally:
        if server.running():
            await asyncio.to_thread(server.stop, "immediate")
        shutil.rmtree(server.dir, ignore_errors=True)
