"""Table-level helpers for Core statements.

The rule for SQL in this package: the hot paths (storing a page, loading and recording
attempts, claiming leases, the reconciler) use Core statements on ``table_of(Model)``, which
skip the ORM's identity map and object construction; everything else (the API, the CLI,
discovery) uses ORM objects, which read better and cost nothing that matters there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession


def table_of(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


def insert_ignoring_duplicates(on: AsyncSession | AsyncConnection, model: type[SQLModel]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for whichever backend the session is on."""
    name = on.dialect.name if isinstance(on, AsyncConnection) else on.get_bind().dialect.name
    dialect = postgresql if name == "postgresql" else sqlite
    return dialect.insert(table_of(model)).on_conflict_do_nothing()
