"""The pages: ``GET /ui`` (failing subscriptions and the filtered delivery log) and
``GET /ui/events/{id}`` (an event, its body and its deliveries). Both read through the
same functions as the REST routes, scoped to the signed-in owner."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, or_, select
from starlette.requests import Request
from starlette.responses import Response

from relay.api.auth import Principal
from relay.api.context import Services, services
from relay.api.errors import ApiError
from relay.api.routes.events import visible_event
from relay.api.routes.subscriptions import load_visible
from relay.api.spec import Operation, Query, operation
from relay.api.ui.filters import FIELDS, View, raw_fields, read_view
from relay.api.ui.render import e, frame, login_page
from relay.api.ui.session import COOKIE, Notices, Session, SessionCodec, signed_in
from relay.api.ui.tables import (
    FormFields,
    delivery_rows,
    event_panel,
    filter_form,
    subscriptions_table,
    window_links,
)
from relay.db import delivery_log, utcnow
from relay.db.models import Delivery, DeliveryStatus, Subscription

PAGE_SIZE = 50
MAX_SUBSCRIPTIONS = 200
TITLE = "Failures — Clever Events Relay"

HTML = {"text/html": {"schema": {"type": "string"}}}
ERROR_SCHEMA = "#/components/schemas/Error"
UI_OPERATION = Operation(
    "The on-call page (HTML, for a browser): failing subscriptions and failed deliveries",
    "ui",
    {200: None},
    auth=False,
    query=tuple(
        Query(name, {"type": "string"}, "as in GET /v1/deliveries") for name in FIELDS[:-1]
    ),
    description="Sign in with the admin token or a service token (a form; the page keeps a "
    "session cookie, never the token). It shows failing and disabled subscriptions and the "
    "delivery log, one line per delivery with its attempts, filtered by subscription_id, "
    "status (default failed; any for all), event_type and a since/until window, and links "
    "each delivery to its event and subscription. Buttons retry a delivery, recover a "
    "subscription's failed window and re-enable a disabled subscription, as the API does, "
    "for the signed-in owner's subscriptions only.",
    extra={
        "responses": {
            "200": {"description": "the page, or the sign-in form", "content": HTML},
            "400": {
                "description": "a filter that could not be read (HTML), or a NUL in the "
                "query string (the API's JSON error, from before the page is reached)",
                "content": HTML | {"application/json": {"schema": {"$ref": ERROR_SCHEMA}}},
            },
            "422": {"description": "a filter value that is not valid", "content": HTML},
        }
    },
)


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


def _notice(notices: Notices, request: Request) -> str:
    shown = notices.read(request.query_params.get("notice"))
    if shown is None:
        return ""
    text, ok = shown
    return f'<p class="notice{"" if ok else " bad"}" role="status" id="notice">{e(text)}</p>'


def _deliveries_heading(view: View, shown: int, now: datetime) -> str:
    if view.statuses == (DeliveryStatus.FAILED.value,):
        title = "Failed deliveries"
    elif not view.statuses:
        title = "Deliveries"
    else:
        title = "Deliveries: " + ", ".join(view.statuses)
    return (
        f'<h2 id="deliveries-heading">{e(title)} <span class="muted">newest first, {shown} '
        f"shown, {PAGE_SIZE} a page ·</span> {window_links(view, now)}</h2>"
    )


class Pages:
    def __init__(self, codec: SessionCodec, notices: Notices) -> None:
        self.codec = codec
        self.notices = notices

    async def _session(self, request: Request) -> Session | Response:
        session = await signed_in(request, self.codec)
        if session is not None:
            return session
        expired = COOKIE in request.cookies
        response = login_page("Your session has ended; sign in again." if expired else None)
        if expired:
            response.delete_cookie(COOKIE, path="/ui")
        return response

    @operation(UI_OPERATION)
    async def home(self, request: Request) -> Response:
        session = await self._session(request)
        if isinstance(session, Response):
            return session
        who, svc, now = session.principal, services(request), utcnow()
        try:
            view = read_view(request.query_params)
        except ApiError as exc:
            form = filter_form(View(raw=raw_fields(request.query_params)), [])
            error = f'<p class="notice bad" role="alert" id="filter-error">{e(exc.message)}</p>'
            return frame(TITLE, who, form + error, exc.status)
        subscriptions = await self._subscriptions(svc, who, view)
        rows = await delivery_log.list_deliveries(svc.db, view.deliveries(who), PAGE_SIZE + 1)
        more, rows = len(rows) > PAGE_SIZE, rows[:PAGE_SIZE]
        forms = FormFields(session.csrf, view.url())
        main = (
            _notice(self.notices, request)
            + filter_form(view, [s.id for s in subscriptions])
            + self._subscriptions_section(subscriptions, who, view, forms, now)
            + _deliveries_heading(view, len(rows), now)
            + await self._deliveries(svc, rows, view, forms)
            + self._pages(view, rows, more)
        )
        return frame(TITLE, who, main)

    async def _subscriptions(self, svc: Services, who: Principal, view: View) -> list[Subscription]:
        if view.subscription_id is None:
            return await _failing_subscriptions(svc, who)
        try:
            return [await load_visible(svc, who, view.subscription_id)]
        except ApiError:
            return []

    def _subscriptions_section(
        self, subs: list[Subscription], who: Principal, view: View, forms: FormFields, now: datetime
    ) -> str:
        if view.subscription_id is not None:
            heading = "<h2>Subscription</h2>"
            if not subs:
                return heading + (
                    '<p class="muted" id="no-subscription">No subscription '
                    f"'{e(view.subscription_id)}' visible to this session.</p>"
                )
        else:
            heading = "<h2>Failing subscriptions</h2>"
            if not subs:
                return heading + (
                    '<p class="muted" id="no-failing-subscriptions">No failing subscriptions.</p>'
                )
        note = (
            f'<p class="muted">Showing the first {MAX_SUBSCRIPTIONS}.</p>'
            if len(subs) > MAX_SUBSCRIPTIONS
            else ""
        )
        return heading + subscriptions_table(subs[:MAX_SUBSCRIPTIONS], who, view, forms, now) + note

    async def _deliveries(
        self, svc: Services, rows: list[Delivery], view: View, forms: FormFields
    ) -> str:
        if not rows:
            return '<p class="muted" id="no-deliveries">No deliveries match these filters.</p>'
        ids = [d.id for d in rows if d.id is not None]
        attempts = await delivery_log.attempts_by_delivery(svc.db, ids)
        return delivery_rows(rows, attempts, view, forms)

    def _pages(self, view: View, rows: list[Delivery], more: bool) -> str:
        links = []
        if view.before is not None:
            links.append(f'<a href="{e(view.url(before=None))}" id="newest">Newest</a>')
        if more and rows:
            older = view.url(before=rows[-1].id)
            links.append(f'<a href="{e(older)}" id="older">Older →</a>')
        return f'<nav class="pages">{" · ".join(links)}</nav>'

    async def event(self, request: Request) -> Response:
        session = await self._session(request)
        if isinstance(session, Response):
            return session
        who, svc = session.principal, services(request)
        event_id = request.path_params["event_id"]
        try:
            event, deliveries = await visible_event(svc, who, event_id)
        except ApiError as exc:
            error = f'<p class="notice bad" role="alert" id="not-found">{e(exc.message)}</p>'
            return frame("Not found — Clever Events Relay", who, error, exc.status)
        view = View(statuses=())
        forms = FormFields(session.csrf, f"/ui/events/{event.id}")
        main = (
            _notice(self.notices, request)
            + f"<h2>Event {e(event.type)}</h2>"
            + event_panel(event, who)
            + f'<h2>Its deliveries <span class="muted">{len(deliveries)}</span></h2>'
            + await self._deliveries(svc, deliveries, view, forms)
        )
        return frame(f"Event {event.id} — Clever Events Relay", who, main)
