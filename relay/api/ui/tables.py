"""The page's parts: the filter bar, subscription rows with their actions, one line per
delivery (attempts in a ``<details>``), an event's facts. Every value through :func:`e`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, urlencode

from relay.api.auth import Principal
from relay.api.ui.filters import ANY_STATUS, WINDOWS, View, time_field
from relay.api.ui.render import e, when
from relay.db.models import Delivery, DeliveryAttempt, DeliveryStatus, Event, Subscription
from relay.fanout.matching import EVENT_TYPES


@dataclass(frozen=True)
class FormFields:
    """What every action form of a page carries: the session's CSRF token, and the view to
    come back to."""

    csrf: str
    back: str

    def hidden(self) -> str:
        return (
            f'<input type="hidden" name="csrf" value="{e(self.csrf)}">'
            f'<input type="hidden" name="back" value="{e(self.back)}">'
        )


def event_link(event_id: str) -> str:
    return f'<a class="mono" href="/ui/events/{e(quote(event_id, safe=""))}">{e(event_id)}</a>'


def subscription_link(view: View, subscription_id: str) -> str:
    href = view.url(subscription_id=subscription_id, before=None)
    return f'<a class="mono sub-link" href="{e(href)}">{e(subscription_id)}</a>'


def filter_form(view: View, subscriptions: list[str]) -> str:
    raw = view.raw
    status = raw.get("status", "")
    options = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>{s}</option>'
        for s in (ANY_STATUS, *(s.value for s in DeliveryStatus if s != DeliveryStatus.FAILED))
    )
    failed = DeliveryStatus.FAILED.value
    subs = "".join(f'<option value="{e(s)}">' for s in subscriptions)
    types = "".join(f'<option value="{t}">' for t in EVENT_TYPES)
    return (
        '<form class="filters" method="get" action="/ui" id="filters">'
        '<label>Subscription <input name="subscription_id" list="subscription-ids" '
        f'value="{e(raw.get("subscription_id", ""))}" placeholder="any"></label>'
        f'<datalist id="subscription-ids">{subs}</datalist>'
        f'<label>Status <select name="status"><option value="{failed}">{failed}</option>'
        f"{options}</select></label>"
        '<label>Event type <input name="event_type" list="event-types" '
        f'value="{e(raw.get("event_type", ""))}" placeholder="any"></label>'
        f'<datalist id="event-types">{types}</datalist>'
        '<label>From <input type="datetime-local" step="1" name="since" '
        f'value="{e(raw.get("since", ""))}"></label>'
        '<label>to <input type="datetime-local" step="1" name="until" '
        f'value="{e(raw.get("until", ""))}"></label>'
        '<button type="submit" id="apply">Apply</button>'
        '<a href="/ui" id="clear">Clear</a></form>'
    )


def window_links(view: View, now: datetime) -> str:
    """ "last 1 h · 24 h · 7 d": the same view over a recent window."""
    start = now.replace(second=0, microsecond=0)
    links = " ".join(
        f'<a href="{e(view.url(since=start - span, until=None, before=None))}">{label}</a>'
        for label, span in WINDOWS
    )
    return f'<span class="quick">last {links}</span>'


def _subscription_actions(sub: Subscription, forms: FormFields, now: datetime) -> str:
    path = f"/ui/subscriptions/{e(quote(sub.id, safe=''))}"
    if not sub.enabled:
        return (
            f'<form method="post" action="{path}/enable">{forms.hidden()}'
            f'<button type="submit" class="enable">Re-enable</button></form>'
        )
    since = time_field(sub.failing_since or now - timedelta(days=1))
    return (
        '<details class="recover"><summary>Re-send failed…</summary>'
        f'<form method="post" action="{path}/recover">{forms.hidden()}'
        f'<label>from <input type="datetime-local" step="1" name="since" value="{since}" '
        'required></label><label>to <input type="datetime-local" step="1" name="until"></label>'
        '<button type="submit" class="recover">Re-send</button></form></details>'
    )


def subscriptions_table(
    subs: list[Subscription], who: Principal, view: View, forms: FormFields, now: datetime
) -> str:
    head = "<tr><th>Subscription</th>" + ("<th>Owner</th>" if who.is_admin else "")
    head += "<th>URL</th><th>State</th><th>Failing since</th><th>Reason</th><th>Action</th></tr>"
    rows = []
    for sub in subs:
        state = "disabled" if not sub.enabled else "failing" if sub.failing_since else "enabled"
        rows.append(
            f'<tr class="subscription" data-id="{e(sub.id)}">'
            f"<td>{subscription_link(view, sub.id)}</td>"
            + (f"<td>{e(sub.owner)}</td>" if who.is_admin else "")
            + f'<td class="url" title="{e(sub.url)}">{e(sub.url)}</td>'
            f'<td class="state {state}">{state}</td><td>{when(sub.failing_since)}</td>'
            f'<td class="reason" title="{e(sub.disabled_reason or "")}">'
            f"{e(sub.disabled_reason or '')}</td>"
            f"<td>{_subscription_actions(sub, forms, now)}</td></tr>"
        )
    return f'<table class="subs" id="failing-subscriptions">{head}{"".join(rows)}</table>'


def attempts_table(attempts: list[DeliveryAttempt]) -> str:
    if not attempts:
        return '<p class="attempts muted">No attempts recorded yet.</p>'
    rows = "".join(
        f'<tr class="attempt"><td>{when(a.attempted_at)}</td><td>{e(a.trigger)}</td>'
        f'<td class="status-code">{e(a.status_code if a.status_code is not None else "—")}</td>'
        f"<td>{e(a.duration_ms)} ms</td>"
        f'<td class="attempt-error">{e(a.error or "")}</td>'
        f'<td class="excerpt"><pre class="excerpt">{e(a.response_excerpt)}</pre></td></tr>'
        for a in attempts
    )
    return (
        '<table class="attempts"><tr><th>Attempted</th><th>Trigger</th><th>Status</th>'
        f"<th>Duration</th><th>Error</th><th>Response excerpt</th></tr>{rows}</table>"
    )


def _last_result(attempts: list[DeliveryAttempt]) -> str:
    """The latest attempt in a line: its error (or status) and the start of the reply."""
    if not attempts:
        return ""
    last = attempts[-1]
    code = "—" if last.status_code is None else str(last.status_code)
    excerpt = " ".join(last.response_excerpt.split())[:200]
    return " · ".join(part for part in (last.error or code, excerpt) if part)


DELIVERY_HEAD = (
    '<div class="row head"><span></span><span>Delivery</span><span>Status</span>'
    "<span>Subscription</span><span>Event type</span><span>Event</span><span>Created</span>"
    '<span title="attempts">#</span><span>Last attempt</span><span></span></div>'
)


def delivery_rows(
    deliveries: list[Delivery],
    attempts: dict[int, list[DeliveryAttempt]],
    view: View,
    forms: FormFields,
) -> str:
    """One line each; the line opens to the attempts. One form serves every Retry button
    (each names its delivery in ``formaction``)."""
    rows = []
    for d in deliveries:
        assert d.id is not None
        tried = attempts.get(d.id, [])
        last = _last_result(tried)
        retry = (
            ""
            if d.status == DeliveryStatus.CANCELLED
            else f'<button form="retry" formaction="/ui/deliveries/{d.id}/retry" '
            f'class="retry" id="retry-{d.id}">Retry</button>'
        )
        rows.append(
            f'<details class="delivery" id="delivery-{d.id}" data-id="{d.id}">'
            f'<summary class="row"><span>{d.id}</span>'
            f'<span><span class="status {e(d.status)}">{e(d.status)}</span></span>'
            f"<span>{subscription_link(view, d.subscription_id)}</span>"
            f"<span>{e(d.event_type)}</span><span>{event_link(d.event_id)}</span>"
            f"<span>{when(d.created_at)}</span><span>{e(d.attempts)}</span>"
            f'<span class="last" title="{e(last)}">{e(last)}</span><span>{retry}</span>'
            f"</summary>{attempts_table(tried)}</details>"
        )
    return (
        f'<form id="retry" method="post" action="/ui">{forms.hidden()}</form>'
        f'<div class="list" id="deliveries">{DELIVERY_HEAD}{"".join(rows)}</div>'
    )


def event_panel(event: Event, who: Principal) -> str:
    try:
        body = json.dumps(json.loads(event.body), indent=2)
    except ValueError:
        body = event.body
    facts = [
        ("Event", f'<code id="event-id">{e(event.id)}</code>'),
        ("Type", e(event.type)),
        ("District", e(event.district_id or "—")),
        ("Record", e(event.record_id or "—")),
        ("Created (Clever)", when(event.created)),
        ("Received", when(event.received_at)),
    ]
    if event.owner is not None and who.is_admin:
        facts.append(("Owner", e(event.owner)))
    if event.district_id is not None and event.record_id is not None:
        query = urlencode({"district": event.district_id, "record_id": event.record_id})
        facts.append(("API", f"<code>GET /v1/events?{e(query)}</code>"))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return (
        f'<div class="panel"><dl>{rows}</dl>'
        f'<details><summary>Webhook body</summary><pre id="event-body">{e(body)}</pre>'
        "</details></div>"
    )
