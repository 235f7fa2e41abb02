"""A small read-only web page at ``/ui``: failing subscriptions and failed deliveries with
their attempts, behind the API's tokens.

Authentication. Browsers cannot send a bearer header when they navigate, so ``/ui`` shows a
token form; ``POST /ui/login`` checks the token exactly as the API does and sets a session
cookie holding an itsdangerous-signed, timestamped *identity* — never the token: for a service
token its owner and generation, for the admin token a keyed fingerprint of it. Every page
checks the cookie again against the current state (the owner's generation, the configured admin
token), so revoking an owner's tokens, or changing the admin token, ends its sessions at once.
The cookie is HttpOnly, SameSite=Strict, Secure when the page is served over https, and expires
after :data:`SESSION_SECONDS`.

CSRF. The only state-changing requests are the login and logout forms. The cookie is
SameSite=Strict, so a cross-site form post never carries the session; and every POST must come
with an ``Origin`` (or, where a browser omits it, ``Referer``) of this very host, which also
stops "login CSRF" (a foreign page logging the victim in as the attacker). A POST with neither
header is refused: every current browser sends ``Origin`` on form posts.

Output. Everything shown is escaped with :func:`html.escape` (response excerpts are untrusted
receiver content). The page has no script at all, and a Content-Security-Policy that would
refuse one: ``default-src 'none'``, the stylesheet only from ``/ui/static/ui.css``.

These routes are outside ``/v1``, so the API's bearer middleware does not apply; they are left
out of ``/openapi.json`` (``include_in_schema=False``).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from sqlmodel import col, or_, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from relay.api.auth import Principal
from relay.api.context import Services, services
from relay.api.ui.render import (
    SECURITY_HEADERS,
    STYLE,
    deliveries_table,
    document,
    e,
    login_page,
    page,
    subscriptions_table,
)
from relay.api.ui.session import (
    COOKIE,
    SESSION_SECONDS,
    SessionCodec,
    current_generation,
    end_session,
    is_https,
    same_origin,
    signed_in,
)
from relay.db.delivery_log import DeliveryFilters, delivery_query
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Subscription
from relay.secrets import RuntimeSecrets

logger = logging.getLogger("relay.api.ui")

PAGE_SIZE = 50
MAX_SUBSCRIPTIONS = 200
MAX_FORM_BYTES = 8192


async def _failing_subscriptions(svc: Services, who: Principal) -> list[Subscription]:
    query = (
        select(Subscription)
        .where(
            or_(
                (col(Subscription.enabled).is_(False))
                & col(Subscription.disabled_reason).is_not(None),
                col(Subscription.failing_since).is_not(None),
            )
        )
        .order_by(col(Subscription.id))
        .limit(MAX_SUBSCRIPTIONS + 1)
    )
    if not who.is_admin:
        query = query.where(col(Subscription.owner) == who.owner)
    async with svc.db.read() as session:
        return list((await session.exec(query)).all())


async def _failed_deliveries(
    svc: Services, who: Principal, before: int | None
) -> tuple[list[Delivery], dict[int, list[DeliveryAttempt]], bool]:
    filters = DeliveryFilters(
        statuses=(DeliveryStatus.FAILED.value,),
        owner=None if who.is_admin else who.owner,
        before_id=before,
    )
    async with svc.db.read() as session:
        rows = list((await session.exec(delivery_query(filters, PAGE_SIZE + 1))).all())
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        by_delivery: dict[int, list[DeliveryAttempt]] = {}
        ids = [d.id for d in rows if d.id is not None]
        if ids:
            attempts = await session.exec(
                select(DeliveryAttempt)
                .where(col(DeliveryAttempt.delivery_id).in_(ids))
                .order_by(col(DeliveryAttempt.delivery_id), col(DeliveryAttempt.id))
            )
            for attempt in attempts.all():
                by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return rows, by_delivery, more


def _before_param(request: Request) -> int | str | None:
    raw = request.query_params.get("before")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        return "before: expected a delivery id"
    return int(raw)


class Ui:
    """The handlers, bound to the session codec made from the process's secrets."""

    def __init__(self, runtime: RuntimeSecrets) -> None:
        self.codec = SessionCodec(runtime.secret_key, runtime.admin_token)

    async def home(self, request: Request) -> Response:
        session = await signed_in(request, self.codec)
        if session is None:
            expired = COOKIE in request.cookies
            response = login_page("Your session has ended; sign in again." if expired else None)
            if expired:
                response.delete_cookie(COOKIE, path="/ui")
            return response
        who, svc = session.principal, services(request)
        before = _before_param(request)
        if isinstance(before, str):
            return page(document("Bad request", f'<p class="error">{e(before)}</p>'), 400)
        subs = await _failing_subscriptions(svc, who)
        deliveries, attempts, more = await _failed_deliveries(svc, who, before)
        who_text = "admin (all owners)" if who.is_admin else f"service {who.owner}"
        subs_note = (
            f'<p class="muted">Showing the first {MAX_SUBSCRIPTIONS}.</p>'
            if len(subs) > MAX_SUBSCRIPTIONS
            else ""
        )
        pages = []
        if before is not None:
            pages.append('<a href="/ui" id="newest">Newest</a>')
        if more and deliveries:
            pages.append(f'<a href="/ui?before={deliveries[-1].id}" id="older">Older →</a>')
        body = (
            "<header><h1>Clever Events Relay</h1>"
            '<form method="post" action="/ui/logout">'
            f'<span id="signed-in-as">Signed in as {e(who_text)}</span>'
            '<button type="submit" id="logout">Sign out</button></form></header>'
            "<main><h2>Failing subscriptions</h2>"
            f"{subscriptions_table(subs[:MAX_SUBSCRIPTIONS], who)}{subs_note}"
            "<h2>Failed deliveries <span class='muted'>(newest first, "
            f"{PAGE_SIZE} per page)</span></h2>"
            f"{deliveries_table(deliveries, attempts)}"
            f'<nav class="pages">{" · ".join(pages)}</nav></main>'
        )
        return page(document("Failures — Clever Events Relay", body))

    async def login(self, request: Request) -> Response:
        if not same_origin(request):
            return login_page("This form must be sent from the relay's own page.", 403)
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return login_page("The form is too large.", 413)
        try:
            fields = parse_qs(raw.decode("utf-8"), max_num_fields=4)
        except (UnicodeDecodeError, ValueError):
            return login_page("The form could not be read.", 400)
        token = (fields.get("token") or [""])[0].strip()
        svc = services(request)
        who = await svc.authenticator.authenticate(f"Bearer {token}") if token else None
        if who is None:
            logger.info("ui sign-in refused")
            return login_page("That token is not valid (or has been revoked).", 401)
        codec = self.codec
        if who.is_admin:
            value = codec.for_admin()
        else:
            generation = await current_generation(svc, who.owner)
            if generation is None:
                return login_page("That token is not valid (or has been revoked).", 401)
            value = codec.for_service(who.owner, generation)
        logger.info("ui sign-in", extra={"owner": who.owner})
        response = RedirectResponse("/ui", status_code=303)
        response.headers.update(SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_SECONDS,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=is_https(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        if not same_origin(request):
            return page(
                document("Refused", '<p class="error">This form must be sent from the relay.</p>'),
                403,
            )
        await end_session(services(request), self.codec, request.cookies.get(COOKIE))
        response = RedirectResponse("/ui", status_code=303)
        response.headers.update(SECURITY_HEADERS)
        response.delete_cookie(
            COOKIE, path="/ui", httponly=True, samesite="strict", secure=is_https(request)
        )
        return response

    async def css(self, _request: Request) -> Response:
        return Response(
            STYLE,
            media_type="text/css",
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )


def routes(runtime: RuntimeSecrets) -> list[Route]:
    ui = Ui(runtime)
    return [
        Route("/ui", ui.home, methods=["GET"], include_in_schema=False),
        Route("/ui/login", ui.login, methods=["POST"], include_in_schema=False),
        Route("/ui/logout", ui.logout, methods=["POST"], include_in_schema=False),
        Route("/ui/static/ui.css", ui.css, methods=["GET"], include_in_schema=False),
    ]
