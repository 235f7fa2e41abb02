"""``/ui``: the page an on-call engineer opens. Failing subscriptions and the delivery log
(failed deliveries by default), one line each with the attempts a click away, filtered by
subscription, status, event type and time through the query string; links from a delivery
to its event (``/ui/events/{id}``) and its subscription; and the API's actions as forms:
retry a delivery, recover a subscription's failed window, re-enable a subscription.

Authentication. Browsers cannot send a bearer header when they navigate, so ``/ui`` shows a
token form; ``POST /ui/login`` checks the token exactly as the API does and sets a session
cookie holding an itsdangerous-signed, timestamped *identity* — never the token: for a service
token its owner and generation, for the admin token a keyed fingerprint of it. Every page
checks the cookie again against the current state (the owner's generation, the configured admin
token, the sessions signed out), so revoking an owner's tokens, or changing the admin token,
ends its sessions at once. The cookie is HttpOnly, SameSite=Strict, Secure when the page is
served over https, and expires after :data:`SESSION_SECONDS`.

Owner scoping. Every read and action goes through the functions the REST routes use
(``relay.api.actions``, ``delivery_log``, ``visible_event``, ``load_visible``) with the
session's principal: a service owner's session sees and acts on its own subscriptions only,
and another owner's ids are "not found", as in the API.

CSRF, two checks. Every POST must come with an ``Origin`` (or, where a browser omits it,
``Referer``) of this very host — which also stops "login CSRF" (a foreign page logging the
victim in as the attacker); a POST with neither is refused, and every current browser sends
``Origin`` on form posts. And every action form carries a token derived from the session's id
(HMAC with the secret key), checked against the session the cookie names. The cookie being
SameSite=Strict, a cross-site post would not carry the session anyway.

Output. Everything shown is escaped with :func:`html.escape` (response excerpts are untrusted
receiver content). The page has no script at all, and a Content-Security-Policy that would
refuse one: ``default-src 'none'``, the stylesheet only from ``/ui/static/ui.css``, forms only
to this host.

These routes are outside ``/v1``, so the API's bearer middleware does not apply. ``GET /ui``
is described in ``/openapi.json`` (tag ``ui``, HTML) so that it can be found; the form
targets are not.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.api.spec import Endpoint
from relay.api.ui import session
from relay.api.ui.forms import Forms
from relay.api.ui.render import STYLE
from relay.api.ui.session import COOKIE, SESSION_SECONDS, Notices, SessionCodec
from relay.api.ui.views import PAGE_SIZE, Pages
from relay.secrets import RuntimeSecrets

__all__ = ["COOKIE", "PAGE_SIZE", "SESSION_SECONDS", "SessionCodec", "routes", "session"]


async def css(_request: Request) -> Response:
    return Response(
        STYLE,
        media_type="text/css",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def routes(runtime: RuntimeSecrets) -> list[Route]:
    codec = SessionCodec(runtime.secret_key, runtime.admin_token)
    notices = Notices(runtime.secret_key)
    pages, forms = Pages(codec, notices), Forms(codec, notices)
    hidden: list[tuple[str, Endpoint, str]] = [
        ("/ui/events/{event_id}", pages.event, "GET"),
        ("/ui/login", forms.login, "POST"),
        ("/ui/logout", forms.logout, "POST"),
        ("/ui/deliveries/{delivery_id}/retry", forms.retry, "POST"),
        ("/ui/subscriptions/{subscription_id}/recover", forms.recover, "POST"),
        ("/ui/subscriptions/{subscription_id}/enable", forms.enable, "POST"),
        ("/ui/static/ui.css", css, "GET"),
    ]
    return [Route("/ui", pages.home, methods=["GET"])] + [
        Route(path, endpoint, methods=[method], include_in_schema=False)
        for path, endpoint, method in hidden
    ]
