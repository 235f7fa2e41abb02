"""The page's POST forms: sign in, sign out, and the actions (retry a delivery, recover a
subscription's failed window, re-enable a subscription).

Every POST must come from a page of this host (``Origin``, or ``Referer`` where a browser
omits it); an action also needs the signed-in session and the CSRF token of that session.
The actions are :mod:`relay.api.actions`, the REST routes' own, with the session's
principal: a service owner acts on its own subscriptions only (anything else is "not
found", as in the API). Success redirects back to the page the form came from, with a
signed one-line notice (Post/Redirect/Get); a refusal answers its status with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from relay.api import actions
from relay.api.context import services
from relay.api.errors import ApiError, describe_validation_error
from relay.api.routes.redelivery import RecoverRequest
from relay.api.ui.filters import back_url, read_time
from relay.api.ui.render import SECURITY_HEADERS, login_page, refused
from relay.api.ui.session import (
    COOKIE,
    SESSION_SECONDS,
    Notices,
    Session,
    SessionCodec,
    current_generation,
    end_session,
    is_https,
    same_origin,
    signed_in,
    valid_csrf,
)

logger = logging.getLogger("relay.api.ui")

MAX_FORM_BYTES = 8192
NOT_FROM_HERE = "This form must be sent from the relay's own page."
STALE_FORM = (
    "This form is out of date (its CSRF token does not belong to this session): "
    "reload the page and try again."
)
Form = dict[str, str]
Action = Callable[[Request, Session, Form], Awaitable[str]]


async def read_form(request: Request) -> Form | Response:
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return refused("The form is too large.", 413)
    try:
        fields = parse_qs(raw.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return refused("The form could not be read.", 400)
    return {name: values[0] for name, values in fields.items()}


def _redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


async def _retry(request: Request, session: Session, _form: Form) -> str:
    delivery_id, _ = await actions.retry_delivery(
        services(request), session.principal, request.path_params["delivery_id"]
    )
    return f"Delivery {delivery_id} is queued for a new attempt now."


async def _recover(request: Request, session: Session, form: Form) -> str:
    svc = services(request)
    sub = await actions.recoverable(svc, session.principal, request.path_params["subscription_id"])
    since, until = read_time(form, "since"), read_time(form, "until")
    if since is None:
        raise ApiError(422, "since: give the start of the window to re-send")
    try:
        window = RecoverRequest.model_validate(
            {"since": since.isoformat(), "until": until.isoformat() if until else None}
        )
    except ValidationError as exc:
        raise ApiError(422, describe_validation_error(exc)) from None
    if window.until is not None and window.until <= window.since:  # a typo, on a form
        raise ApiError(422, "until must be after since")
    marked, due = await actions.recover_failed(svc, sub, window.since, window.until)
    await actions.enqueue(svc, due)
    plural = "delivery" if marked == 1 else "deliveries"
    return f"{marked} failed {plural} of {sub.id} queued for a new attempt."


async def _enable(request: Request, session: Session, _form: Form) -> str:
    sub = await actions.enable_subscription(
        services(request), session.principal, request.path_params["subscription_id"]
    )
    return f"Subscription {sub.id} is enabled again; its parked deliveries go out shortly."


class Forms:
    def __init__(self, codec: SessionCodec, notices: Notices) -> None:
        self.codec = codec
        self.notices = notices
        self.retry = self._action("retry", _retry)
        self.recover = self._action("recover", _recover)
        self.enable = self._action("enable", _enable)

    def _action(self, name: str, act: Action) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if not same_origin(request):
                return refused(NOT_FROM_HERE, 403)
            form = await read_form(request)
            if isinstance(form, Response):
                return form
            session = await signed_in(request, self.codec)
            if session is None:
                return login_page("Your session has ended; sign in again.", 401)
            back = back_url(form.get("back", ""))
            if not valid_csrf(session, form.get("csrf", "")):
                logger.info("ui form refused: CSRF token", extra={"action": name})
                return refused(STALE_FORM, 403, back)
            try:
                done = await act(request, session, form)
            except ApiError as exc:
                return refused(exc.message, exc.status, back)
            logger.info("ui " + name, extra={"owner": session.principal.owner})
            separator = "&" if "?" in back else "?"
            return _redirect(f"{back}{separator}notice={self.notices.dumps(done)}")

        return handle

    async def login(self, request: Request) -> Response:
        if not same_origin(request):
            return login_page(NOT_FROM_HERE, 403)
        form = await read_form(request)
        if isinstance(form, Response):
            return form
        token = form.get("token", "").strip()
        svc = services(request)
        who = await svc.authenticator.authenticate(f"Bearer {token}") if token else None
        if who is None:
            logger.info("ui sign-in refused")
            return login_page("That token is not valid (or has been revoked).", 401)
        if who.is_admin:
            value = self.codec.for_admin()
        else:
            generation = await current_generation(svc, who.owner)
            if generation is None:
                return login_page("That token is not valid (or has been revoked).", 401)
            value = self.codec.for_service(who.owner, generation)
        logger.info("ui sign-in", extra={"owner": who.owner})
        response = _redirect("/ui")
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
            return refused("This form must be sent from the relay.", 403)
        await end_session(services(request), self.codec, request.cookies.get(COOKIE))
        response = _redirect("/ui")
        response.delete_cookie(
            COOKIE, path="/ui", httponly=True, samesite="strict", secure=is_https(request)
        )
        return response
