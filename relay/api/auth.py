"""Bearer-token authentication, checked before anything else on every ``/v1`` route.

The admin token sees everything. A service token is an itsdangerous-signed
``{"o": owner, "g": generation, "n": nonce}``: it needs no storage of its own, each minting
gives a different one, and revoking an owner bumps the stored generation so every token
minted before stops working at once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlmodel import select
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.api.errors import ApiError, error_response
from relay.db import Database
from relay.db.models import ADMIN_OWNER, ServiceOwner

SERVICE_TOKEN_PREFIX = "rst_"


@dataclass(frozen=True)
class Principal:
    owner: str
    is_admin: bool

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(403, "this route needs the admin token")


class TokenCodec:
    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt="relay.service-token")

    def mint(self, owner: str, generation: int) -> str:
        """A new token each call (the nonce ``n``), so a token handed to one deployment is
        not also the one another got; all of an owner's tokens end together on revocation."""
        payload = {"o": owner, "g": generation, "n": secrets.token_urlsafe(6)}
        return SERVICE_TOKEN_PREFIX + str(self._serializer.dumps(payload))

    def read(self, token: str) -> tuple[str, int] | None:
        if not token.startswith(SERVICE_TOKEN_PREFIX):
            return None
        try:
            payload = self._serializer.loads(token.removeprefix(SERVICE_TOKEN_PREFIX))
        except BadSignature:
            return None
        if not isinstance(payload, dict):
            return None
        owner, generation = payload.get("o"), payload.get("g")
        if not isinstance(owner, str) or not isinstance(generation, int):
            return None
        return owner, generation


class Authenticator:
    def __init__(self, admin_token: str, codec: TokenCodec, db: Database) -> None:
        self._admin_token = admin_token.encode()
        self.codec = codec
        self._db = db

    async def authenticate(self, header: str | None) -> Principal | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if hmac.compare_digest(token.encode(), self._admin_token):
            return Principal(owner=ADMIN_OWNER, is_admin=True)
        decoded = self.codec.read(token)
        if decoded is None:
            return None
        owner, generation = decoded
        async with self._db.read() as session:
            row = (
                await session.exec(select(ServiceOwner).where(ServiceOwner.owner == owner))
            ).first()
        if row is None or row.revoked or row.generation != generation:
            return None
        return Principal(owner=owner, is_admin=False)


class AuthMiddleware:
    """401 for any ``/v1`` request without a valid token, whatever its path, method or body."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_api_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        principal = await self.authenticator.authenticate(header)
        if principal is None:
            await error_response(401, refusal(header))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


BEARER_FORM = "the header must be 'Authorization: Bearer <token>'"


def refusal(header: str | None) -> str:
    """Why a request was refused: no header, a header of the wrong form (a bare token,
    another scheme), or a token that is not (or no longer) valid. Never repeats the token."""
    if not header or not header.strip():
        return f"missing bearer token: {BEARER_FORM}"
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return f"the Authorization header does not start with 'Bearer ': {BEARER_FORM}"
    if not token.strip():
        return f"the Authorization header has no token after 'Bearer': {BEARER_FORM}"
    return "invalid or revoked token"


def is_api_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def principal(request: Request) -> Principal:
    value = request.state.principal
    assert isinstance(value, Principal)
    return value
