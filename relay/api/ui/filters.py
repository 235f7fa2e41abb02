"""The page's filters, read from the query string with the REST API's own parsers (so a bad
value is refused with the same message as ``GET /v1/deliveries`` gives), and written back
into the links and forms that keep them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request

from relay.api.auth import Principal
from relay.api.errors import ApiError
from relay.api.query import (
    parse_event_type,
    parse_identifier,
    parse_statuses,
    parse_time,
    parse_window,
)
from relay.db.delivery_log import DeliveryFilters
from relay.db.models import DeliveryStatus

EVENT_PAGE = "/ui/events/"
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
FIELDS = ("subscription_id", "status", "event_type", "since", "until", "before")
DEFAULT_STATUS = DeliveryStatus.FAILED.value
ANY_STATUS = "any"
#: The "last …" links beside the time fields.
WINDOWS = (("1 h", timedelta(hours=1)), ("24 h", timedelta(days=1)), ("7 d", timedelta(days=7)))


def params_request(values: Mapping[str, str]) -> Request:
    """A request carrying only ``values`` as its query string: the API's parsers read their
    parameters from a request, and an empty form field here means "no filter" (the API
    would refuse an empty id)."""
    query = urlencode({k: v for k, v in values.items() if v})
    return Request({"type": "http", "query_string": query.encode(), "headers": []})


def time_field(value: datetime | None) -> str:
    """A UTC time as an ``<input type="datetime-local">`` holds it (read back as UTC)."""
    if value is None:
        return ""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S" if value.second else "%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class View:
    """What the delivery list shows; ``raw`` is the query string as given (shown back in the
    form, also when it was refused)."""

    subscription_id: str | None = None
    statuses: tuple[str, ...] = (DEFAULT_STATUS,)
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None
    raw: dict[str, str] = field(default_factory=dict)

    def deliveries(self, who: Principal) -> DeliveryFilters:
        return DeliveryFilters(
            subscription_id=self.subscription_id,
            statuses=self.statuses,
            event_type=self.event_type,
            since=self.since,
            until=self.until,
            owner=None if who.is_admin else who.owner,
            before_id=self.before,
        )

    @property
    def status_field(self) -> str:
        return ",".join(self.statuses) if self.statuses else ANY_STATUS

    def params(self, **changes: Any) -> dict[str, str]:
        """The view as query parameters (defaults left out), with ``changes`` applied."""
        view = replace(self, **changes)
        values = {
            "subscription_id": view.subscription_id or "",
            "status": "" if view.statuses == (DEFAULT_STATUS,) else view.status_field,
            "event_type": view.event_type or "",
            "since": time_field(view.since),
            "until": time_field(view.until),
            "before": "" if view.before is None else str(view.before),
        }
        return {k: v for k, v in values.items() if v}

    def url(self, **changes: Any) -> str:
        query = urlencode(self.params(**changes))
        return "/ui?" + query if query else "/ui"


def read_view(values: Mapping[str, str]) -> View:
    """The view the query string asks for; :class:`ApiError` (422, 400) naming a bad value."""
    raw = raw_fields(values)
    request = params_request(raw)
    any_status = raw.get("status") == ANY_STATUS
    statuses = () if any_status else parse_statuses(request) or (DEFAULT_STATUS,)
    since, until = parse_window(request)
    before = raw.get("before")
    if before is not None and (not before.isdigit() or len(before) > 18):
        raise ApiError(400, f"before: expected a delivery id, got {before!r}")
    return View(
        subscription_id=parse_identifier(request, "subscription_id"),
        statuses=statuses,
        event_type=parse_event_type(request, "event_type"),
        since=since,
        until=until,
        before=int(before) if before is not None else None,
        raw=raw,
    )


def read_time(values: Mapping[str, str], name: str) -> datetime | None:
    """A time field of a form, read like the filters' (no offset: UTC)."""
    return parse_time(params_request({name: values.get(name, "").strip()}), name)


def raw_fields(values: Mapping[str, str]) -> dict[str, str]:
    """The filter fields given, as given (shown back in the form, also when refused)."""
    return {k: values[k].strip() for k in FIELDS if values.get(k, "").strip()}


def back_url(value: str) -> str:
    """Where an action form sends the browser back to (its ``back`` field): an event page or
    a view of ``/ui``, rebuilt from what it names, so a redirect never leaves ``/ui``."""
    path, _, query = value.partition("?")
    if path.startswith(EVENT_PAGE) and _EVENT_ID.fullmatch(path.removeprefix(EVENT_PAGE)):
        return path
    try:
        fields = parse_qs(query, max_num_fields=len(FIELDS))
        return read_view({k: v[0] for k, v in fields.items()}).url()
    except (ApiError, ValueError):
        return "/ui"
