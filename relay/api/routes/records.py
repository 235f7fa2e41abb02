"""The roster: every Clever record as the relay knows it now (any valid token).

A consumer asks "what does this student look like now?" here instead of at Clever: each
record is the object of the last event (Clever's or a sync's) that set it, with that event's
id. Pagination is keyset on (district, type, id).
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import log_schemas
from relay.api.auth import principal
from relay.api.context import services
from relay.api.errors import ApiError
from relay.api.pagination import parse_limit
from relay.api.query import IDENTIFIER, parse_identifier
from relay.api.spec import CURSOR, LIMIT, Operation, Query, operation
from relay.db.models import Record
from relay.fanout.matching import RECORD_TYPES, ROLES


def record_out(record: Record) -> log_schemas.RosterRecord:
    return log_schemas.RosterRecord(
        id=record.id,
        type=record.type,
        district=record.district_id,
        object=json.loads(record.object),
        event_id=record.event_id,
        updated_at=record.updated_at,
    )


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise ApiError(422, f"{name}: must be one of {', '.join(allowed)}, not {value[:40]!r}")
    return value


@operation(
    Operation(
        "List the roster: Clever's records as they are now",
        "records",
        {200: log_schemas.RosterRecordList},
        query=(
            Query("district", {"type": "string", "pattern": IDENTIFIER}, "one Clever district id"),
            Query("type", {"type": "string", "enum": list(RECORD_TYPES)}, "a record type"),
            Query(
                "school",
                {"type": "string", "pattern": IDENTIFIER},
                "records of this school (users by any role's school or schools, sections by "
                "school, the school itself)",
            ),
            Query("role", {"type": "string", "enum": list(ROLES)}, "users holding this role"),
            LIMIT,
            CURSOR,
        ),
        description="Any valid token. Each record is the object of the last event (Clever's "
        "or a sync's) that set it. Ordered by district, type and id.",
    )
)
async def list_records(request: Request) -> Response:
    principal(request)
    svc = services(request)
    limit = parse_limit(request)
    district = parse_identifier(request, "district")
    record_type = _choice(request, "type", RECORD_TYPES)
    school = parse_identifier(request, "school")
    role = _choice(request, "role", ROLES)
    key = (col(Record.district_id), col(Record.type), col(Record.id))
    query = select(Record).order_by(*key).limit(limit + 1)
    if district is not None:
        query = query.where(col(Record.district_id) == district)
    if record_type is not None:
        query = query.where(col(Record.type) == record_type)
    if school is not None:
        query = query.where(col(Record.schools).contains(f" {school} ", autoescape=True))
    if role is not None:
        query = query.where(col(Record.roles).contains(f" {role} ", autoescape=True))
    if cursor := request.query_params.get("cursor"):
        after = svc.cursors.decode("records", cursor)
        if not (isinstance(after, list) and len(after) == 3):
            raise ApiError(404, "cursor: no such page (not a cursor for records)")
        query = query.where(sa.tuple_(*key) > sa.tuple_(*(str(part) for part in after)))
    async with svc.db.read() as session:
        rows = list((await session.exec(query)).all())
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = svc.cursors.encode("records", [last.district_id, last.type, last.id])
    data = [record_out(r).model_dump(mode="json") for r in rows[:limit]]
    return JSONResponse({"data": data, "next_cursor": next_cursor})


@operation(
    Operation(
        "Show one record as it is now",
        "records",
        {200: log_schemas.RosterRecord},
        errors=(404,),
        description="Any valid token. The record of that Clever id (the most recently set, "
        "should two districts share an id).",
    )
)
async def get_record(request: Request) -> Response:
    principal(request)
    record_id = request.path_params["record_id"]
    query = (
        select(Record)
        .where(col(Record.id) == record_id)
        .order_by(col(Record.updated_at).desc())
        .limit(1)
    )
    async with services(request).db.read() as session:
        record = (await session.exec(query)).first() if len(record_id) <= 64 else None
    if record is None:
        raise ApiError(404, f"no record {record_id[:64]!r} in the roster")
    return JSONResponse(record_out(record).model_dump(mode="json"))


routes = [
    Route("/v1/records", list_records, methods=["GET"]),
    Route("/v1/records/{record_id}", get_record, methods=["GET"]),
]
