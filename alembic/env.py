"""Alembic environment: async engine, URL from the relay's settings, batch mode on SQLite."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from relay.db import models  # noqa: F401  (registers the tables)
from relay.db.engine import Database
from relay.db.types import UTCDateTime
from relay.settings import load_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("import relay.db.types")
        return "relay.db.types.UTCDateTime()"
    return False


def _database_url() -> str:
    url = config.attributes.get("database_url")
    return str(url) if url else load_settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    database = Database(_database_url())
    async with database.engine.connect() as connection:
        await connection.run_sync(_configure)
        await connection.commit()
    await database.dispose()


if context.is_offline_mode():
    context.configure(
        url=_database_url(), target_metadata=target_metadata, render_item=_render_item
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
