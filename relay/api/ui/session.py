"""The /ui session cookie and the CSRF checks (see the package docstring for why)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlmodel import select
from starlette.requests import Request

from relay.api.auth import Principal
from relay.api.context import Services, services
from relay.db.models import UI_SESSION_SECONDS, EndedUiSession, ServiceOwner

COOKIE = "relay_ui_session"
SESSION_SECONDS = UI_SESSION_SECONDS
_SALT = "relay.ui-session"


@dataclass(frozen=True)
class Session:
    principal: Principal
    cookie: str
    csrf: str  # the token every action form of this session carries


class SessionCodec:
    """Signs and reads the session cookie: ``{"o": owner, "g": generation, "s": id}`` for a
    service token, ``{"o": "admin", "f": fingerprint, "s": id}`` for the admin token."""

    def __init__(self, secret_key: str, admin_token: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
        self._csrf_key = hmac.new(secret_key.encode(), b"relay.ui-csrf", hashlib.sha256).digest()
        self._admin_fingerprint = hmac.new(
            secret_key.encode(), b"relay.ui-admin:" + admin_token.encode(), hashlib.sha256
        ).hexdigest()[:32]

    def for_admin(self) -> str:
        return self._dumps({"o": "admin", "f": self._admin_fingerprint})

    def for_service(self, owner: str, generation: int) -> str:
        return self._dumps({"o": owner, "g": generation})

    def _dumps(self, payload: dict[str, Any]) -> str:
        # "s": the session's own id, so that signing out can end this session everywhere
        return str(self._serializer.dumps(payload | {"s": secrets.token_hex(16)}))

    def csrf_token(self, session_id: str) -> str:
        """Bound to one session (its id), so a token read from one page is useless to
        another session and ends with its own; derived, so no storage."""
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()

    def read(self, value: str) -> dict[str, Any] | None:
        try:
            payload = self._serializer.loads(value, max_age=SESSION_SECONDS)
        except (SignatureExpired, BadSignature):
            return None
        return payload if isinstance(payload, dict) else None

    def is_admin(self, payload: dict[str, Any]) -> bool:
        fingerprint = payload.get("f")
        return isinstance(fingerprint, str) and hmac.compare_digest(
            fingerprint, self._admin_fingerprint
        )


async def current_generation(svc: Services, owner: str) -> int | None:
    async with svc.db.read() as session:
        row = (await session.exec(select(ServiceOwner).where(ServiceOwner.owner == owner))).first()
    if row is None or row.revoked:
        return None
    return row.generation


async def end_session(svc: Services, codec: SessionCodec, cookie: str | None) -> None:
    """Sign out: the session's id is recorded, so its cookie stops working at once (kept
    until the cookie would have expired anyway: ``relay.db.retention``)."""
    payload = codec.read(cookie) if cookie else None
    session_id = payload.get("s") if payload else None
    if not isinstance(session_id, str) or len(session_id) > 32:
        return
    async with svc.db.write() as session:
        if await session.get(EndedUiSession, session_id) is None:
            session.add(EndedUiSession(id=session_id))


async def _ended(svc: Services, payload: dict[str, Any]) -> bool:
    session_id = payload.get("s")
    if not isinstance(session_id, str):
        return True  # a cookie from before sessions had ids: sign in again
    async with svc.db.read() as session:
        return await session.get(EndedUiSession, session_id) is not None


async def signed_in(request: Request, codec: SessionCodec) -> Session | None:
    """The signed-in principal, re-checked against the current tokens and the sessions
    signed out, or None."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    svc = services(request)
    payload = codec.read(value)
    if payload is None or await _ended(svc, payload):
        return None
    csrf = codec.csrf_token(str(payload["s"]))
    if "f" in payload:
        if not codec.is_admin(payload):
            return None
        return Session(Principal(owner="admin", is_admin=True), value, csrf)
    owner, generation = payload.get("o"), payload.get("g")
    if not isinstance(owner, str) or not isinstance(generation, int):
        return None
    if await current_generation(svc, owner) != generation:
        return None
    return Session(Principal(owner=owner, is_admin=False), value, csrf)


def valid_csrf(session: Session, sent: str) -> bool:
    return hmac.compare_digest(sent.encode(), session.csrf.encode())


def same_origin(request: Request) -> bool:
    """A POST from a page of this host: ``Origin`` (or ``Referer``) names our own host."""
    host = request.headers.get("host", "")
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null" or not host:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


class Notices:
    """The one-line outcome of an action, carried in the redirect back to the page
    (Post/Redirect/Get). Signed, and good for a minute, so that a link cannot make the page
    claim something was done."""

    MAX_AGE = 60

    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="relay.ui-notice")

    def dumps(self, text: str, ok: bool = True) -> str:
        return str(self._serializer.dumps([text, ok]))

    def read(self, value: str | None) -> tuple[str, bool] | None:
        if not value:
            return None
        try:
            text, ok = self._serializer.loads(value, max_age=self.MAX_AGE)
        except (SignatureExpired, BadSignature, ValueError, TypeError):
            return None
        return (text, ok) if isinstance(text, str) and isinstance(ok, bool) else None
