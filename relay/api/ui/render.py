"""HTML for /ui: the page frame, escaping and the stylesheet. Every value is escaped (response
excerpts are untrusted receiver content); no script, and headers that would refuse one."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from starlette.responses import HTMLResponse

from relay.api.auth import Principal

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

# Dense on purpose: one line per delivery, so a screen holds a few dozen of them.
STYLE = """\
*{box-sizing:border-box}
body{font:13px/1.35 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
a{color:#1d4ed8;text-decoration:none}a:hover{text-decoration:underline}
code,.mono{font:12px/1.35 ui-monospace,SFMono-Regular,Menlo,monospace}
header{display:flex;align-items:center;gap:16px;padding:6px 16px;background:#1d2330;color:#fff}
header h1{font-size:15px;margin:0;font-weight:600}header h1 a{color:#fff}
header .who{margin-left:auto;color:#c7ccd6}
header form{margin:0}
main{padding:8px 16px 24px}
h2{font-size:13.5px;margin:14px 0 4px;font-weight:650}
h2 .muted{font-weight:400}
.muted{color:#6b7280}
.error{color:#a4161a;font-weight:600}
.notice{margin:8px 0 0;padding:5px 10px;border-radius:3px;background:#e7f5ea;color:#14532d;
border:1px solid #b7dfc2}
.notice.bad{background:#fde8e8;color:#7f1d1d;border-color:#f3b4b4}
button{font:inherit;font-size:12px;line-height:16px;padding:0 8px;cursor:pointer;
border:1px solid #9aa3b2;border-radius:3px;background:#fff;color:#1d2330}
button:hover{background:#eef2ff;border-color:#1d4ed8}
input,select{font:inherit;font-size:12.5px;padding:1px 4px;border:1px solid #b8bfcc;
border-radius:3px;background:#fff}
form.filters{display:flex;flex-wrap:wrap;align-items:center;gap:4px 10px;margin:8px 0 0;
padding:6px 10px;background:#fff;border:1px solid #d8dce3}
form.filters label{color:#4b5563}
form.filters input[name=subscription_id]{width:18em}
form.filters input[name=event_type]{width:10.5em}
h2 .quick{font-weight:400;color:#6b7280}h2 .quick a{margin-left:4px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e6eb;padding:2px 6px;text-align:left;white-space:nowrap}
th{background:#eceff3;font-weight:600;font-size:12px}
table.subs td.url,table.subs td.reason{max-width:340px;overflow:hidden;text-overflow:ellipsis}
table.subs form{display:inline-flex;gap:4px;margin:0;align-items:center}
table.subs details>summary{cursor:pointer;color:#1d4ed8}
table.subs details[open]>summary{margin-bottom:2px}
.list{background:#fff;border:1px solid #d8dce3}
.row{display:grid;align-items:center;gap:0 8px;padding:1px 6px;border-bottom:1px solid #e3e6eb;
grid-template-columns:12px 58px 66px 210px 118px 182px 148px 22px minmax(0,1fr) 52px}
.row>*{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.row.head{background:#eceff3;font-weight:600;font-size:12px}
details.delivery>summary{list-style:none;cursor:pointer}
details.delivery>summary::-webkit-details-marker{display:none}
details.delivery>summary::before{content:"\\25B8";color:#6b7280}
details.delivery[open]>summary::before{content:"\\25BE"}
details.delivery:nth-child(even)>summary{background:#fafbfc}
details.delivery>summary:hover{background:#eef2ff}
details.delivery[open]>summary{background:#e8edf7}
.attempts{margin:0 0 4px 20px;width:calc(100% - 20px);font-size:12px}
.attempts td{vertical-align:top}
.attempts td.excerpt{white-space:normal}
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-height:7.5em;overflow:auto;
font:11.5px/1.3 ui-monospace,monospace}
.status{display:inline-block;padding:0 5px;border-radius:8px;font-size:11.5px;
background:#e5e7eb}
.status.failed{background:#fde2e2;color:#991b1b}
.status.retrying{background:#fef3c7;color:#92400e}
.status.succeeded{background:#dcfce7;color:#166534}
.state.disabled{color:#991b1b;font-weight:600}.state.failing{color:#92400e;font-weight:600}
.last{color:#4b5563}
nav.pages{margin:6px 0}
.panel{background:#fff;border:1px solid #d8dce3;padding:6px 10px;margin-top:8px}
.panel dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
.panel dt{color:#6b7280}.panel dd{margin:0}
.login{max-width:420px;margin:60px auto;background:#fff;padding:24px;border:1px solid #d8dce3}
.login input[type=password]{width:100%;padding:6px;margin:8px 0}
.login button{font-size:13px;padding:4px 14px}
"""


def e(value: object) -> str:
    """Escape for HTML text and attribute values (quotes included)."""
    return escape("" if value is None else str(value), quote=True)


def when(value: datetime | None) -> str:
    """A UTC time, short (every time on the page is UTC; the header says so)."""
    if value is None:
        return '<span class="muted">—</span>'
    shown = value.strftime("%Y-%m-%d %H:%M:%S")
    return f'<time datetime="{e(value.isoformat())}">{e(shown)}</time>'


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


def frame(title: str, who: Principal, main: str, status: int = 200) -> HTMLResponse:
    """A signed-in page: the header (who, sign out) over ``main``."""
    who_text = "admin (all owners)" if who.is_admin else f"service {who.owner}"
    body = (
        '<header><h1><a href="/ui">Clever Events Relay</a></h1>'
        '<span class="muted">times in UTC</span>'
        f'<span class="who" id="signed-in-as">Signed in as {e(who_text)}</span>'
        '<form method="post" action="/ui/logout">'
        '<button type="submit" id="logout">Sign out</button></form></header>'
        f"<main>{main}</main>"
    )
    return page(document(title, body), status)


def login_page(message: str | None = None, status: int = 200) -> HTMLResponse:
    notice = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    body = (
        '<div class="login"><h1>Clever Events Relay</h1>'
        "<p>Sign in with the admin token or a service token to see failing subscriptions "
        "and failed deliveries, and to re-send them.</p>"
        f"{notice}"
        '<form method="post" action="/ui/login">'
        '<label for="token">Token</label>'
        '<input type="password" id="token" name="token" autocomplete="off" required>'
        '<button type="submit" id="login">Sign in</button>'
        "</form></div>"
    )
    return page(document("Sign in — Clever Events Relay", body), status)


def refused(message: str, status: int, back: str = "/ui") -> HTMLResponse:
    """A form that was not acted on: why, and the way back."""
    body = (
        '<main><p class="notice bad" role="alert" id="refused">'
        f"{e(message)}</p>"
        f'<p><a href="{e(back)}" id="back">Back to the page</a></p></main>'
    )
    return page(document("Refused — Clever Events Relay", body), status)
