"""Districts (admin only): which Clever districts the relay polls, and how each is doing.

A district is read without its token (``relay.db.models``), so one whose token this process's
keys cannot decrypt is shown, re-tokened and deleted like any other. PATCH and DELETE lock the
row: racing each other, the later one answers 404 once it is gone, never 500.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import schemas
from relay.api.auth import principal
from relay.api.context import read_json, services
from relay.api.errors import ApiError
from relay.api.pagination import parse_limit
from relay.api.spec import CURSOR, LIMIT, Operation, operation
from relay.db import utcnow
from relay.db.models import District


def district_out(district: District) -> schemas.District:
    return schemas.District(
        id=district.id,
        name=district.name,
        status=district.status,
        start_from=district.start_from,
        token_source=district.token_source,
        cursor=district.cursor,
        last_polled_at=district.last_polled_at,
        last_event_at=district.last_event_at,
        lag_seconds=district.lag_seconds(utcnow()),
        last_error=district.last_error,
        created_at=district.created_at,
        updated_at=district.updated_at,
    )


def _json(model: schemas.District, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


async def _get(request: Request, district_id: str) -> District:
    async with services(request).db.read() as session:
        district = await session.get(District, district_id)
    if district is None:
        raise ApiError(404, f"no district {district_id!r}")
    return district


@operation(
    Operation(
        "Register a district to poll",
        "districts",
        {201: schemas.District},
        request=schemas.DistrictCreate,
        errors=(403, 409),
    )
)
async def create_district(request: Request) -> Response:
    principal(request).require_admin()
    body = await read_json(request, schemas.DistrictCreate)
    district = District(id=body.id, name=body.name, token=body.token, start_from=body.start_from)
    try:
        async with services(request).db.write() as session:
            session.add(district)
    except IntegrityError:
        raise ApiError(409, f"district {body.id!r} is already registered") from None
    return _json(district_out(district), 201)


@operation(
    Operation(
        "List districts",
        "districts",
        {200: schemas.DistrictList},
        query=(LIMIT, CURSOR),
        errors=(403,),
    )
)
async def list_districts(request: Request) -> Response:
    principal(request).require_admin()
    svc = services(request)
    limit = parse_limit(request)
    query = select(District).order_by(col(District.id)).limit(limit + 1)
    if cursor := request.query_params.get("cursor"):
        query = query.where(col(District.id) > str(svc.cursors.decode("districts", cursor)))
    async with svc.db.read() as session:
        rows = list((await session.exec(query)).all())
    next_cursor = svc.cursors.encode("districts", rows[limit - 1].id) if len(rows) > limit else None
    page = schemas.DistrictList(
        data=[district_out(d) for d in rows[:limit]], next_cursor=next_cursor
    )
    return JSONResponse(page.model_dump(mode="json"))


@operation(Operation("Show a district", "districts", {200: schemas.District}, errors=(403, 404)))
async def get_district(request: Request) -> Response:
    principal(request).require_admin()
    return _json(district_out(await _get(request, request.path_params["district_id"])))


@operation(
    Operation(
        "Rename, re-token, pause, resume or acknowledge a district",
        "districts",
        {200: schemas.District},
        request=schemas.DistrictUpdate,
        errors=(403, 404, 409),
        description="A new token is tried at once (a poll waiting out a backoff or a rate "
        "limit is due now): a district in error because its token could not be decrypted, "
        "or refused, recovers with its first good page.",
    )
)
async def update_district(request: Request) -> Response:
    principal(request).require_admin()
    body = await read_json(request, schemas.DistrictUpdate)
    district_id = request.path_params["district_id"]
    async with services(request).db.write() as session:
        district = await session.get(District, district_id, with_for_update=True)
        if district is None:
            raise ApiError(404, f"no district {district_id!r}")
        if body.name is not None:
            district.name = body.name
        if body.token is not None:
            district.token = body.token
            district.token_source = "manual"
            district.poll_after = None  # the backoff and the pacing were the old token's
        if body.status is not None:
            district.status = body.status
            if body.status == "active":
                district.last_error = None
                district.consecutive_failures = 0
                district.poll_after = None
        district.updated_at = utcnow()
        session.add(district)
    return _json(district_out(district))


@operation(
    Operation("Stop polling and forget a district", "districts", {204: None}, errors=(403, 404))
)
async def delete_district(request: Request) -> Response:
    principal(request).require_admin()
    district_id = request.path_params["district_id"]
    async with services(request).db.write() as session:
        district = await session.get(District, district_id, with_for_update=True)
        if district is None:
            raise ApiError(404, f"no district {district_id!r}")
        await session.delete(district)
    return Response(status_code=204)


routes = [
    Route("/v1/districts", create_district, methods=["POST"]),
    Route("/v1/districts", list_districts, methods=["GET"]),
    Route("/v1/districts/{district_id}", get_district, methods=["GET"]),
    Route("/v1/districts/{district_id}", update_district, methods=["PATCH"]),
    Route("/v1/districts/{district_id}", delete_district, methods=["DELETE"]),
]
