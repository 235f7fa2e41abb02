"""Table-level helpers for Core statements.

The rule for SQL in this package: the hot paths (storing a page, loading and recording
attempts, claiming leases, the reconciler) use Core statements on ``table_of(Model)``, which
skip the ORM's identity map and object construction; everything else (the API, the CLI,
discovery) uses ORM objects, which read better and cost nothing that matters there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import BigInteger, Boolean, String, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db.models import Delivery, DeliveryStatus


def table_of(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


class _Listed(TypeDecorator[list[Any]]):
    """A list bound as one parameter: an array on PostgreSQL, JSON text on SQLite."""

    impl = String
    cache_ok = True

    def __init__(self, item: TypeEngine[Any]) -> None:
        super().__init__()
        self.item = item

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(self.item))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        listed = list(value)
        return listed if dialect.name == "postgresql" else json.dumps(listed)


class _OneOf(ColumnElement[bool]):
    """``column`` is one of the values bound to ``values`` (``one_of``)."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a condition as it is: no "= 1" on SQLite
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("values", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], values: BindParameter[Any]) -> None:
        self.column = column
        self.values = values


@compiles(_OneOf, "postgresql")
def _one_of_postgresql(element: _OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    column, values = compiler.process(element.column, **kw), compiler.process(element.values, **kw)
    return f"{column} = ANY({values})"


@compiles(_OneOf)
def _one_of_json_each(element: _OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    # both parts are compiled SQL (a column and a placeholder), never a value
    column, values = compiler.process(element.column, **kw), compiler.process(element.values, **kw)
    return f"{column} IN (SELECT value FROM json_each({values}))"  # noqa: S608


def one_of(column: ColumnElement[Any], name: str, item: TypeEngine[Any] | None = None) -> _OneOf:
    """``column IN (…)`` with the whole list bound to the parameter ``name`` (integers
    unless ``item`` says otherwise). The same SQL text whatever the list's length, where
    ``in_`` renders one placeholder per value: a statement compiled and a statement prepared
    by the driver for every batch size (with an upsert that could not be cached, 9 % of a
    busy worker's CPU was SQLAlchemy's compiler: py-spy on ``bench/throughput.py``)."""
    listed = _Listed(item if item is not None else BigInteger())
    return _OneOf(column, bindparam(name, type_=listed))


async def insert_pending(
    conn: AsyncConnection, rows: Iterable[tuple[str, str, str]], now: datetime
) -> dict[tuple[str, str], int]:
    """New deliveries, due now, for (subscription id, event id, event type) rows (a delivery
    that exists already is left as it is); returns (subscription id, event id) → delivery id.

    One ``INSERT … SELECT`` from the rows bound as lists (``_PENDING``), where an executemany
    processed eight parameters per delivery in Python: 5,000 deliveries for a page of 1,000
    events to five subscriptions, in the page's write transaction (on SQLite, the lock every
    record transaction waits for)."""
    listed = list(rows)
    if not listed:
        return {}
    name = conn.dialect.name
    params: dict[str, Any] = {"now": now}
    if name == "postgresql":
        params |= {key: [row[n] for row in listed] for n, key in enumerate(("s", "e", "t"))}
    else:
        params["rows"] = json.dumps(listed)
    result = await conn.execute(_PENDING[name], params)
    return {(s, e): int(i) for i, s, e in result.all()}


def _insert_pending(dialect: Any) -> Any:
    deliveries = table_of(Delivery)
    if dialect is postgresql:
        text = String()
        source: Any = (
            sa.func.unnest(
                *(bindparam(key, type_=postgresql.ARRAY(text)) for key in ("s", "e", "t"))
            )
            .table_valued("s", "e", "t")
            .render_derived()
        )
        columns = [source.c.s, source.c.e, source.c.t]
    else:
        source = sa.func.json_each(bindparam("rows", type_=String())).table_valued("value")
        columns = [sa.func.json_extract(source.c.value, f"$[{n}]") for n in range(3)]
    now = bindparam("now", type_=deliveries.c.created_at.type)
    chosen = sa.select(
        *columns, sa.literal(DeliveryStatus.PENDING.value), sa.literal(0), now, now, now
    ).select_from(source)
    # WHERE: SQLite reads "SELECT … FROM json_each(?) ON CONFLICT" as a join's ON otherwise
    insert = dialect.insert(deliveries).from_select(
        [
            "subscription_id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ],
        chosen.where(sa.true()),
    )
    return insert.on_conflict_do_nothing().returning(
        deliveries.c.id, deliveries.c.subscription_id, deliveries.c.event_id
    )


#: built once per dialect (a reused statement keeps its cache key)
_PENDING = {"postgresql": _insert_pending(postgresql), "sqlite": _insert_pending(sqlite)}


def insert_ignoring_duplicates(on: AsyncSession | AsyncConnection, model: type[SQLModel]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for whichever backend the session is on."""
    name = on.dialect.name if isinstance(on, AsyncConnection) else on.get_bind().dialect.name
    dialect = postgresql if name == "postgresql" else sqlite
    return dialect.insert(table_of(model)).on_conflict_do_nothing()
