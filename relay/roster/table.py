"""The roster table's reads and writes.

Every stored event changes the roster in its page's transaction (``apply``): ``created`` and
``updated`` set the record to the event's ``data.object``, ``deleted`` removes it. What a
change writes is worked out before the transaction (``change_of``), like the rest of a page,
and a page's changes go in as one upsert and one delete, the last event of a record winning.
A sync reads the records of a Data API page (``known``), marks every record it read
(``sync_id``), and once a type was read whole finds what it did not read (``unseen``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import String, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from relay.clever.events import CleverEvent, indexed
from relay.db.models import Record
from relay.db.tables import one_of, table_of
from relay.fanout.matching import ACTIONS, RECORD_TYPES, object_roles, object_schools

_TABLE = table_of(Record)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Change(NamedTuple):
    """What one event does to the roster: ``object`` None removes the record."""

    record_type: str
    record_id: str
    object: str | None
    event_id: str | None
    schools: str
    roles: str


def padded(values: Iterable[str]) -> str:
    """`` a b `` for LIKE '% a %' filters (ids and roles hold no spaces); '' for none."""
    listed = sorted(v for v in values if v and " " not in v)
    return f" {' '.join(listed)} " if listed else ""


def dumps(record: dict[str, Any]) -> str:
    """A record as the roster stores it (compact JSON, UTF-8 as is)."""
    return _dumps(record)


def record_change(
    record_type: str, record: dict[str, Any], event_id: str | None, text: str | None = None
) -> Change:
    """The roster row for ``record`` as it is now (``text``: its ``dumps``, if made)."""
    return Change(
        record_type,
        indexed(str(record["id"])),
        _dumps(record) if text is None else text,
        event_id,
        padded(object_schools(record_type, record)),
        padded(object_roles(record)) if record_type == "users" else "",
    )


def change_of(event: CleverEvent) -> Change | None:
    """The event's change to the roster; None for a type the roster does not keep."""
    record_type, action = event.record_type, event.action
    if record_type not in RECORD_TYPES or action not in ACTIONS:
        return None
    if action == "deleted":
        return Change(record_type, event.record_id, None, event.id, "", "")
    return record_change(record_type, event.raw["data"]["object"], event.id)


async def apply(
    conn: AsyncConnection,
    district_id: str,
    changes: Iterable[Change],
    now: datetime,
    sync_id: int | None = None,
) -> None:
    """Write ``changes`` (in event order: a record's last change wins)."""
    last: dict[tuple[str, str], Change] = {}
    for change in changes:
        last[(change.record_type, change.record_id)] = change
    upserts = [
        (c.record_type, c.record_id, c.object, c.event_id, c.schools, c.roles)
        for c in last.values()
        if c.object is not None
    ]
    deletes = [
        {"b_district": district_id, "b_type": c.record_type, "b_id": c.record_id}
        for c in last.values()
        if c.object is None
    ]
    if upserts:
        await conn.execute(*_upsert_params(conn, district_id, upserts, now, sync_id))
    if deletes:
        await conn.execute(_DELETE, deletes)


async def known(
    conn: AsyncConnection, district_id: str, record_type: str, ids: Sequence[str]
) -> dict[str, str]:
    """The stored object (JSON text) of each of ``ids`` the roster holds."""
    if not ids:
        return {}
    wanted = set(ids)
    rows = await conn.execute(_KNOWN, _span(district_id, record_type, ids))
    return {i: obj for i, obj in rows.all() if i in wanted}


async def mark_read(
    conn: AsyncConnection, district_id: str, record_type: str, ids: Sequence[str], sync_id: int
) -> None:
    """Note that sync ``sync_id`` read ``ids`` from Clever."""
    if ids:
        params = _span(district_id, record_type, ids) | {"b_ids": list(ids), "b_sync": sync_id}
        await conn.execute(_MARK, params)


def _span(district_id: str, record_type: str, ids: Sequence[str]) -> dict[str, Any]:
    """The key range ``ids`` lie in: a Data API page is a run of ascending ids, and a range
    is what the primary key's index answers (PostgreSQL filtered ``id = ANY(…)`` row by row
    over the whole type: 0.5 s a page for 50,000 users)."""
    return {"b_district": district_id, "b_type": record_type, "b_lo": min(ids), "b_hi": max(ids)}


async def unseen(
    conn: AsyncConnection, district_id: str, record_type: str, sync_id: int, limit: int
) -> list[tuple[str, str]]:
    """Up to ``limit`` (id, object) of ``record_type`` that sync ``sync_id`` did not read."""
    rows = await conn.execute(
        _UNSEEN,
        {"b_district": district_id, "b_type": record_type, "b_sync": sync_id, "b_limit": limit},
    )
    return [(i, obj) for i, obj in rows.all()]


_COLUMNS = ("type", "id", "object", "event_id", "schools", "roles")


def _upsert_params(
    conn: AsyncConnection,
    district_id: str,
    rows: list[tuple[str, str, str, str | None, str, str]],
    now: datetime,
    sync_id: int | None,
) -> tuple[Any, dict[str, Any]]:
    """The upsert and its parameters: the rows bound as lists, one statement for the page
    (an executemany processed every row's nine parameters in Python, in the write lock)."""
    name = conn.dialect.name
    params: dict[str, Any] = {"b_district": district_id, "b_now": now, "b_sync": sync_id}
    if name == "postgresql":
        params |= {f"b_{c}": [row[n] for row in rows] for n, c in enumerate(_COLUMNS)}
    else:
        params["b_rows"] = json.dumps(rows)
    return _UPSERT[name], params


def _upsert(dialect: Any) -> Any:
    if dialect is postgresql:
        text = String()
        source: Any = (
            sa.func.unnest(*(bindparam(f"b_{c}", type_=postgresql.ARRAY(text)) for c in _COLUMNS))
            .table_valued(*_COLUMNS)
            .render_derived()
        )
        values = [source.c[c] for c in _COLUMNS]
    else:
        source = sa.func.json_each(bindparam("b_rows", type_=String())).table_valued("value")
        values = [sa.func.json_extract(source.c.value, f"$[{n}]") for n in range(len(_COLUMNS))]
    chosen = sa.select(
        bindparam("b_district", type_=String()),
        *values,
        bindparam("b_sync", type_=_TABLE.c.sync_id.type),
        bindparam("b_now", type_=_TABLE.c.updated_at.type),
    ).select_from(source)
    # WHERE: SQLite reads "SELECT … FROM json_each(?) ON CONFLICT" as a join's ON otherwise
    insert = dialect.insert(_TABLE).from_select(
        ["district_id", *_COLUMNS, "sync_id", "updated_at"], chosen.where(sa.true())
    )
    excluded = insert.excluded
    return insert.on_conflict_do_update(
        index_elements=[_TABLE.c.district_id, _TABLE.c.type, _TABLE.c.id],
        set_={
            "object": excluded.object,
            "event_id": excluded.event_id,
            "schools": excluded.schools,
            "roles": excluded.roles,
            "sync_id": sa.func.coalesce(excluded.sync_id, _TABLE.c.sync_id),
            "updated_at": excluded.updated_at,
        },
    )


_UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
_IN_TYPE = sa.and_(
    _TABLE.c.district_id == bindparam("b_district"), _TABLE.c.type == bindparam("b_type")
)
_DELETE = sa.delete(_TABLE).where(_IN_TYPE).where(_TABLE.c.id == bindparam("b_id"))
_IN_SPAN = _TABLE.c.id.between(bindparam("b_lo"), bindparam("b_hi"))
_KNOWN = sa.select(_TABLE.c.id, _TABLE.c.object).where(_IN_TYPE).where(_IN_SPAN)
_MARK = (
    sa.update(_TABLE)
    .where(_IN_TYPE)
    .where(_IN_SPAN)
    .where(one_of(_TABLE.c.id, "b_ids", String()))
    .values(sync_id=bindparam("b_sync"))
)
_UNSEEN = (
    sa.select(_TABLE.c.id, _TABLE.c.object)
    .where(_IN_TYPE)
    .where(sa.or_(_TABLE.c.sync_id.is_(None), _TABLE.c.sync_id != bindparam("b_sync")))
    .order_by(_TABLE.c.id)
    .limit(bindparam("b_limit"))
)
