"""Fixtures of the fault scenarios: the scenario factory, a private ``redis-server`` to restart
and flush, and a private PostgreSQL cluster to restart (never the shared servers)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from relay.db import Database
from tests.conftest import BACKEND
from tests.faults.scenario import Scenario
from tests.support.servers import free_port

ScenarioFactory = Callable[..., Scenario]


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


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temp dir on a free port (trust auth). As root the
    server runs as the ``postgres`` OS user (it refuses to run as root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="relay-faults-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        result = subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A private PostgreSQL cluster with the relay's tables (PostgreSQL backend only)."""
    if BACKEND != "postgresql":
        pytest.skip(
            "PostgreSQL restart is a PostgreSQL-backend scenario "
            "(RELAY_TEST_DATABASE=postgresql); SQLite has no server to restart"
        )
    bindir = _postgres_bin()
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
