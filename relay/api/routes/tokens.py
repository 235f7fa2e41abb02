"""Service tokens (admin only): one owner per internal service."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import schemas
from relay.api.auth import principal
from relay.api.context import read_json, services
from relay.api.errors import ApiError
from relay.api.spec import Operation, operation
from relay.db import utcnow
from relay.db.models import ADMIN_OWNER, ServiceOwner


@operation(
    Operation(
        "Mint a service token for an owner",
        "tokens",
        {201: schemas.Token},
        request=schemas.TokenCreate,
        errors=(403,),
        description="The token sees and manages only subscriptions whose owner is its own. "
        "Minting again for the same owner gives a new, different token; the earlier ones stay "
        "valid (tokens are signed, not stored, so the relay cannot show them again). To end "
        "them, DELETE /v1/tokens/{owner}: that revokes every token of the owner at once; a "
        "later POST for the owner re-activates it with a fresh token, and the revoked ones "
        "stay invalid.",
    )
)
async def create_token(request: Request) -> Response:
    principal(request).require_admin()
    svc = services(request)
    body = await read_json(request, schemas.TokenCreate)
    if body.owner == ADMIN_OWNER:
        raise ApiError(422, f"owner: {ADMIN_OWNER!r} is reserved for the admin token")
    async with svc.db.write() as session:
        row = await session.get(ServiceOwner, body.owner)
        if row is None:
            row = ServiceOwner(owner=body.owner)
        elif row.revoked:
            row.revoked = False
            row.updated_at = utcnow()
        session.add(row)
    token = svc.tokens.mint(row.owner, row.generation)
    return JSONResponse({"owner": row.owner, "token": token}, status_code=201)


@operation(
    Operation(
        "Revoke every token of an owner",
        "tokens",
        {204: None},
        errors=(403, 404),
        description="Every token minted for the owner so far stops working at once (the "
        "next request with one gets 401). The owner's subscriptions are kept and still "
        "deliver; the admin token still manages them, and a new token can be minted.",
    )
)
async def revoke_tokens(request: Request) -> Response:
    principal(request).require_admin()
    owner = request.path_params["owner"]
    async with services(request).db.write() as session:
        row = await session.get(ServiceOwner, owner)
        if row is None or row.revoked:
            raise ApiError(404, f"no active tokens for owner {owner!r}")
        row.generation += 1
        row.revoked = True
        row.updated_at = utcnow()
        session.add(row)
    return Response(status_code=204)


routes = [
    Route("/v1/tokens", create_token, methods=["POST"]),
    Route("/v1/tokens/{owner}", revoke_tokens, methods=["DELETE"]),
]
