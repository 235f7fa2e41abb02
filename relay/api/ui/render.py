"""HTML for /ui: every value escaped (response excerpts are untrusted receiver content), no
script, and headers that would refuse one."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from relay.api.auth import Principal
from relay.db.models import Delivery, DeliveryAttempt, Subscription

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STYLE = """\
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{display:flex;align-items:center;justify-content:space-between;padding:10px 24px;
background:#1d2330;color:#fff}
header h1{font-size:17px;margin:0}
header form{display:flex;gap:12px;align-items:center;margin:0}
main{padding:16px 24px;max-width:1280px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:8px}
th,td{border:1px solid #d8dce3;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eceff3;font-weight:600}
td.attempts{padding:0}
td.attempts table{margin:0;border:0}
td.attempts th,td.attempts td{border-width:0 0 1px 0;font-size:12.5px}
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-width:420px;font-size:12px}
.muted{color:#6b7280}
.error{color:#a4161a;font-weight:600}
.login{max-width:420px;margin:60px auto;background:#fff;padding:24px;border:1px solid #d8dce3}
.login input[type=password]{width:100%;box-sizing:border-box;padding:6px;margin:8px 0}
button{padding:5px 14px;cursor:pointer}
nav.pages{margin:8px 0 24px}
td.attempts time{white-space:nowrap}
"""


def e(value: object) -> str:
    """Escape for HTML text and attribute values (quotes included)."""
    return escape("" if value is None else str(value), quote=True)


def when(value: datetime | None) -> str:
    if value is None:
        return '<span class="muted">—</span>'
    shown = value.strftime("%Y-%m-%d %H:%M:%S")
    return f'<time datetime="{e(value.isoformat())}">{e(shown)} UTC</time>'


def document(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{e(title)}</title>"
        '<link rel="stylesheet" href="/ui/static/ui.css"></head>'
        f"<body>{body}</body></html>\n"
    )


def page(html: str, status: int = 200, **kwargs: Any) -> HTMLResponse:
    response = HTMLResponse(html, status_code=status, **kwargs)
    response.headers.update(SECURITY_HEADERS)
    return response


def login_page(message: str | None = None, status: int = 200) -> HTMLResponse:
    notice = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    body = (
        '<div class="login"><h1>Clever Events Relay</h1>'
        "<p>Sign in with the admin token or a service token to see failing subscriptions "
        "and failed deliveries.</p>"
        f"{notice}"
        '<form method="post" action="/ui/login">'
        '<label for="token">Token</label>'
        '<input type="password" id="token" name="token" autocomplete="off" required>'
        '<button type="submit" id="login">Sign in</button>'
        "</form></div>"
    )
    return page(document("Sign in — Clever Events Relay", body), status)


def subscriptions_table(subs: list[Subscription], who: Principal) -> str:
    if not subs:
        return '<p class="muted" id="no-failing-subscriptions">No failing subscriptions.</p>'
    head = "<tr><th>Subscription</th>"
    head += "<th>Owner</th>" if who.is_admin else ""
    head += "<th>URL</th><th>State</th><th>Failing since</th><th>Reason</th></tr>"
    rows = []
    for sub in subs:
        state = "enabled" if sub.enabled else "disabled"
        rows.append(
            f'<tr class="subscription" data-id="{e(sub.id)}"><td>{e(sub.id)}</td>'
            + (f"<td>{e(sub.owner)}</td>" if who.is_admin else "")
            + f"<td>{e(sub.url)}</td><td>{state}</td><td>{when(sub.failing_since)}</td>"
            f"<td>{e(sub.disabled_reason or '')}</td></tr>"
        )
    return f'<table id="failing-subscriptions">{head}{"".join(rows)}</table>'


def attempts_table(attempts: list[DeliveryAttempt]) -> str:
    if not attempts:
        return '<span class="muted">no attempts recorded</span>'
    rows = "".join(
        f'<tr class="attempt"><td>{when(a.attempted_at)}</td>'
        f'<td class="status-code">{e(a.status_code if a.status_code is not None else "—")}</td>'
        f"<td>{e(a.duration_ms)} ms</td>"
        f'<td class="attempt-error">{e(a.error or "")}</td>'
        f'<td><pre class="excerpt">{e(a.response_excerpt)}</pre></td></tr>'
        for a in attempts
    )
    return (
        "<table><tr><th>Attempted</th><th>Status</th><th>Duration</th><th>Error</th>"
        f"<th>Response excerpt</th></tr>{rows}</table>"
    )


def deliveries_table(deliveries: list[Delivery], attempts: dict[int, list[DeliveryAttempt]]) -> str:
    if not deliveries:
        return '<p class="muted" id="no-failed-deliveries">No failed deliveries.</p>'
    rows = []
    for d in deliveries:
        assert d.id is not None
        rows.append(
            f'<tr class="delivery" id="delivery-{d.id}" data-id="{d.id}">'
            f"<td>{d.id}</td><td>{e(d.subscription_id)}</td>"
            f"<td>{e(d.event_id)}<br><span class='muted'>{e(d.event_type)}</span></td>"
            f"<td>{when(d.created_at)}</td><td>{e(d.attempts)}</td>"
            f'<td class="attempts">{attempts_table(attempts.get(d.id, []))}</td></tr>'
        )
    return (
        '<table id="failed-deliveries"><tr><th>Delivery</th><th>Subscription</th>'
        "<th>Event</th><th>Created</th><th>Attempts</th><th>Attempt log</th></tr>"
        f"{''.join(rows)}</table>"
    )
