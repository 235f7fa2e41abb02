"""Districts (admin only): which Clever districts the relay polls, and how each is doing.

A district is read without its token (``relay.db.models``), so one whose token this process's
keys cannot decrypt is shown, re-tokened and deleted like any other. PATCH and DELETE lock the
row: racing each other, the later one answers 404 once it is gone, never 500.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession
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
from relay.db.models import District, DistrictStatus, Record, Sync, SyncState
from relay.roster import syncs


def district_out(district: District, sync: Sync | None = None) -> schemas.District:
    shown = sync.shown() if sync is not None else None
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
        sync=schemas.DistrictSync(**shown) if shown is not None else None,
        created_at=district.created_at,
        updated_at=district.updated_at,
    )


async def _sync_of(session: AsyncSession, district: District) -> Sync | None:
    return await session.get(Sync, district.sync_id) if district.sync_id is not None else None


def _json(model: schemas.District, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


async def _get(request: Request, district_id: str) -> tuple[District, Sync | None]:
    async with services(request).db.read() as session:
        district = await session.get(District, district_id)
        if district is None:
            raise ApiError(404, f"no district {district_id!r}")
        return district, await _sync_of(session, district)


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
    sync = None
    try:
        async with services(request).db.write() as session:
            session.add(district)
            if body.start_from == "sync":
                # the roster starts empty: the sync sends every record as created
                await session.flush()
                district.sync_id = await syncs.begin(
                    await session.connection(), body.id, syncs.INITIAL, utcnow()
                )
                district.status = DistrictStatus.SYNCING
            await session.flush()
            sync = await _sync_of(session, district)
    except IntegrityError:
        raise ApiError(409, f"district {body.id!r} is already registered") from None
    return _json(district_out(district, sync), 201)


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
        rows = list((await session.exec(query)).all())[: limit + 1]
        sync_ids = [d.sync_id for d in rows[:limit] if d.sync_id is not None]
        found = (await session.exec(select(Sync).where(col(Sync.id).in_(sync_ids)))).all()
    by_id = {s.id: s for s in found}
    next_cursor = svc.cursors.encode("districts", rows[limit - 1].id) if len(rows) > limit else None
    page = schemas.DistrictList(
        data=[district_out(d, by_id.get(d.sync_id)) for d in rows[:limit]],
        next_cursor=next_cursor,
    )
    return JSONResponse(page.model_dump(mode="json"))


@operation(Operation("Show a district", "districts", {200: schemas.District}, errors=(403, 404)))
async def get_district(request: Request) -> Response:
    principal(request).require_admin()
    return _json(district_out(*await _get(request, request.path_params["district_id"])))


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
        sync = await _sync_of(session, district)
        if body.status is not None:
            district.status = body.status
            if body.status == "active":
                district.last_error = None
                district.consecutive_failures = 0
                district.poll_after = None
                if sync is not None and sync.state == SyncState.RUNNING:
                    district.status = DistrictStatus.SYNCING  # paused mid-sync: it goes on
        district.updated_at = utcnow()
        session.add(district)
    return _json(district_out(district, sync))


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
        # its roster and syncs go with it (its events stay, for the delivery log)
        await session.exec(delete(Record).where(col(Record.district_id) == district_id))
        await session.exec(delete(Sync).where(col(Sync.district_id) == district_id))
    return Response(status_code=204)


@operation(
    Operation(
        "Sync the district's roster from Clever's Data API now",
        "districts",
        {202: schemas.District},
        request=schemas.DistrictResync,
        errors=(403, 404, 409),
        description="Reads every record Clever shares and sends each difference with the "
        "relay's roster as an event with source 'sync'; polling waits until it ends and "
        "then goes on from the moment it began. The body is optional.",
    )
)
async def resync_district(request: Request) -> Response:
    principal(request).require_admin()
    body = (
        await read_json(request, schemas.DistrictResync)
        if await request.body()
        else schemas.DistrictResync()
    )
    district_id = request.path_params["district_id"]
    async with services(request).db.write() as session:
        district = await session.get(District, district_id, with_for_update=True)
        if district is None:
            raise ApiError(404, f"no district {district_id!r}")
        running = await _sync_of(session, district)
        if running is not None and running.state == SyncState.RUNNING:
            raise ApiError(409, f"district {district_id!r} is already syncing (sync {running.id})")
        if district.status in (DistrictStatus.PAUSED, DistrictStatus.UNAUTHORIZED):
            raise ApiError(
                409,
                f"district {district_id!r} is {district.status}: PATCH status=active first",
            )
        district.sync_id = await syncs.begin(
            await session.connection(),
            district_id,
            syncs.REQUESTED,
            utcnow(),
            emit_created=body.emit_created,
        )
        district.status = DistrictStatus.SYNCING
        district.updated_at = utcnow()
        session.add(district)
        await session.flush()
        sync = await _sync_of(session, district)
    return _json(district_out(district, sync), 202)


routes = [
    Route("/v1/districts", create_district, methods=["POST"]),
    Route("/v1/districts", list_districts, methods=["GET"]),
    Route("/v1/districts/{district_id}", get_district, methods=["GET"]),
    Route("/v1/districts/{district_id}", update_district, methods=["PATCH"]),
    Route("/v1/districts/{district_id}", delete_district, methods=["DELETE"]),
    Route("/v1/districts/{district_id}/resync", resync_district, methods=["POST"]),
]
