"""The async engine and transaction helpers.

SQLite: WAL (readers never block the writer), a busy timeout, and ``BEGIN IMMEDIATE`` for
write transactions. Without IMMEDIATE, two processes that both read-then-write inside a
deferred transaction can each take a snapshot, and one of them loses its update (or gets
SQLITE_BUSY mid-transaction where busy_timeout cannot help). Read transactions stay
deferred so the API's reads never queue behind writers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "relay_write"


def refused(exc: DBAPIError) -> bool:
    """The database refused the statement's values (a NUL, a length, a constraint), as
    opposed to being away (connection lost, server restarting): retrying the same values
    cannot help, retrying after an outage can."""
    return not isinstance(exc, OperationalError | InterfaceError) and not exc.connection_invalidated


def utcnow() -> datetime:
    return datetime.now(UTC)


def _create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    # Bound parameters are district tokens, signing secrets and student records: an error's
    # text (logged, or shown by a traceback) must never carry them.
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=10,
            pool_timeout=kwargs.get("pool_timeout", 30.0),
            hide_parameters=True,
        )

    engine = create_async_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so we can emit our own BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class Database:
    """One engine per process; ``read()`` and ``write()`` open a session in a transaction."""

    def __init__(self, url: str, *, pool_timeout: float = 30.0) -> None:
        """``pool_timeout``: seconds to wait for a connection when all are in use
        (PostgreSQL; the API answers 503 sooner than a worker gives up)."""
        self.url = url
        self.engine = _create_engine(url, pool_timeout=pool_timeout)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        session = AsyncSession(self.engine, expire_on_commit=False)
        async with session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block exits, rolled back on error."""
        session = AsyncSession(self._write_engine, expire_on_commit=False)
        async with session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
