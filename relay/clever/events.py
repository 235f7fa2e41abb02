"""Parse Clever event pages from the raw JSON, strictly.

Why by hand and not from the OpenAPI spec: the spec puts ``previous_attributes`` at the event's
top level, but Clever sends it at ``event.data.previous_attributes``; generated models drop it.
We keep every event exactly as received in ``CleverEvent.raw`` (it is the webhook body) and only
*read* the few fields the relay needs. Anything that would make the cursor or the matching
wrong (no id, a malformed id, no ``type``, no record id) is refused as ``CleverBadBody`` rather
than skipped: a skipped event is a lost event.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from relay._exceptions import CleverBadBody
from relay.clever.ratelimit import RateLimit
from relay.db.types import storable

__all__ = [
    "CleverEvent",
    "EventsPage",
    "bad_json",
    "is_valid_event_id",
    "object_id_time",
    "parse_event",
    "parse_event_object",
    "parse_events_page",
    "safe_excerpt",
]

# Clever ids are lowercase ObjectIds. Upper case is refused on purpose: ids are compared as
# strings (cursor order, unique keys), so "ABC" and "abc" must never both be accepted.
_EVENT_ID_RE = re.compile(r"[0-9a-f]{24}")
_TYPE_RE = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")
_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SPACE_RE = re.compile(r"\s+")

EXCERPT_LIMIT = 200
JSON_EXCERPT_LIMIT = 40


def safe_excerpt(
    text: str | bytes, *, limit: int = EXCERPT_LIMIT, redact: Iterable[str] = ()
) -> str:
    """A short, single-line, log-safe excerpt of a response body.

    HTML tags are stripped (Clever's 404 is an Express HTML page), control characters and runs
    of whitespace collapse to one space, every string in ``redact`` (the token) is replaced, and
    the result is cut to ``limit`` characters. Redaction happens before cutting so that a token
    can't survive half-cut at the edge.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if "<" in text and ">" in text:
        text = html.unescape(_TAG_RE.sub(" ", text))
    for secret in redact:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SPACE_RE.sub(" ", _CONTROL_RE.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: max(limit - 3, 0)].rstrip() + "..."
    return text


INDEXED_LENGTH = 64


def indexed(value: str) -> str:
    """A value Clever sent, fit for an indexed column (64 characters, no NUL, which
    PostgreSQL refuses in text). The webhook body keeps the value as sent; only the column
    (filters, ordering by record) sees this form, so two record ids that differ only past
    64 characters are ordered as one record: more order, never less."""
    return storable(value)[:INDEXED_LENGTH]


def is_valid_event_id(value: object) -> TypeGuard[str]:
    """True for a 24-character lowercase hex ObjectId, the only id shape Clever uses."""
    return isinstance(value, str) and _EVENT_ID_RE.fullmatch(value) is not None


def object_id_time(event_id: str) -> datetime:
    """The creation time embedded in an ObjectId: its first 8 hex digits are unix seconds.

    The poll job uses it to detect silent cursor expiry (a cursor older than ~29 days).
    """
    if not is_valid_event_id(event_id):
        raise ValueError(f"not a Clever event id: {_short_repr(event_id)}")
    return datetime.fromtimestamp(int(event_id[:8], 16), tz=UTC)


@dataclass(frozen=True)
class CleverEvent:
    """One Clever event; ``raw`` is the event object exactly as Clever sent it."""

    id: str
    type: str
    created: datetime
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def record_type(self) -> str:
        """``users`` in ``users.updated``."""
        return self.type.split(".", 1)[0]

    @property
    def action(self) -> str:
        """``updated`` in ``users.updated``."""
        return self.type.split(".", 1)[1]

    @property
    def record_id(self) -> str:
        """The changed record's id, ``raw["data"]["object"]["id"]`` (validated at parse), as
        the indexed column holds it (:func:`indexed`)."""
        return indexed(self.raw["data"]["object"]["id"])


@dataclass(frozen=True)
class EventsPage:
    """One page of ``GET /v3.1/events``: events in the order Clever sent them (ascending id)."""

    events: list[CleverEvent]
    rate_limit: RateLimit | None = None
    request_id: str | None = None

    @property
    def last_id(self) -> str | None:
        """The cursor for the next request, or None for an empty page (caught up).

        The highest id rather than blindly the last one: equal for Clever's ascending pages,
        and it can never move the cursor backwards if a page ever arrived out of order.
        """
        return max((event.id for event in self.events), default=None)


def parse_events_page(
    body: bytes | str,
    *,
    rate_limit: RateLimit | None = None,
    request_id: str | None = None,
    redact: Iterable[str] = (),
) -> EventsPage:
    """Parse a list response: ``{"data": [{"data": <event>, "uri": ...}, ...], "links": [...]}``.

    ``redact``: strings (the token) that must not appear in an error's excerpt of the body.
    """
    document = _load_json(body, request_id, redact)
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise _bad("events page is not an object with a 'data' list", document, request_id)
    events: list[CleverEvent] = []
    for index, item in enumerate(document["data"]):
        where = f"events page item {index}"
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise _bad(f"{where} has no 'data' event object", item, request_id)
        events.append(_parse_event(item["data"], where, request_id))
    return EventsPage(events=events, rate_limit=rate_limit, request_id=request_id)


def parse_event(
    body: bytes | str, *, request_id: str | None = None, redact: Iterable[str] = ()
) -> CleverEvent:
    """Parse ``GET /v3.1/events/{id}``: the bare event under ``data``, without the list wrapper."""
    document = _load_json(body, request_id, redact)
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise _bad("event response is not an object with a 'data' event", document, request_id)
    return _parse_event(document["data"], "event", request_id)


def parse_event_object(event: object, *, request_id: str | None = None) -> CleverEvent:
    """Validate an already-decoded event object (e.g. one re-read from the database)."""
    return _parse_event(event, "event", request_id)


def _parse_event(event: object, where: str, request_id: str | None) -> CleverEvent:
    if not isinstance(event, dict):
        raise _bad(f"{where} is not an object", event, request_id)
    event_id = event.get("id")
    if not is_valid_event_id(event_id):
        raise _bad(f"{where} has no valid 24-hex 'id'", event_id, request_id)
    event_type = event.get("type")
    if not isinstance(event_type, str) or _TYPE_RE.fullmatch(event_type) is None:
        raise _bad(f"{where} ({event_id}) has no '<record>.<action>' type", event_type, request_id)
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    record_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(record_id, str) or not record_id:
        raise _bad(f"{where} ({event_id}) has no 'data.object.id'", record_id, request_id)
    return CleverEvent(
        id=event_id,
        type=indexed(event_type),
        created=_created(event.get("created"), event_id),
        raw=event,
    )


def _created(value: object, event_id: str) -> datetime:
    """``created`` as aware UTC; the id's own timestamp when it is absent or unreadable.

    Clever's ``created`` is whole seconds and equals the id time, so the fallback loses nothing,
    and a cosmetic field must not stop the pipeline.
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            try:
                return parsed.astimezone(UTC)
            except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00
                pass
    return object_id_time(event_id)


def _load_json(body: bytes | str, request_id: str | None, redact: Iterable[str]) -> Any:
    try:
        # NaN and Infinity are not JSON, though Python reads them: they become null, as in
        # JavaScript, so that the webhook body stays JSON every receiver can read
        return json.loads(body, parse_constant=lambda _name: None)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise bad_json(body, exc, request_id=request_id, redact=redact) from None
    except RecursionError:
        raise CleverBadBody(
            "Clever sent JSON nested too deeply to read", request_id=request_id
        ) from None


def bad_json(
    body: bytes | str,
    exc: ValueError,
    *,
    request_id: str | None = None,
    redact: Iterable[str] = (),
    what: str = "Clever sent",
) -> CleverBadBody:
    """The BadBody for a body that doesn't decode.

    HTML or text (a proxy's error page) gets the full 200-character excerpt. Broken JSON gets
    only its first few characters plus where it broke: past them come student records, which
    have no place in logs, and "at char 4096 of 4096" already says "truncated".
    """
    head = body.lstrip()[:1]
    if head in (b"{", b"[", "{", "["):
        excerpt = safe_excerpt(body, limit=JSON_EXCERPT_LIMIT, redact=redact)
        where = (
            f" at char {exc.pos} of {len(body)}" if isinstance(exc, json.JSONDecodeError) else ""
        )
        message = f"{what} truncated or invalid JSON{where}: {excerpt!r}"
    else:
        excerpt = safe_excerpt(body, redact=redact)
        message = f"{what} a body that is not JSON: {excerpt!r}"
    return CleverBadBody(message, request_id=request_id, body_excerpt=excerpt)


def _bad(what: str, value: object, request_id: str | None) -> CleverBadBody:
    """A BadBody naming the place and a short repr of the offending value only.

    Not the whole item: events carry student records, which have no place in logs.
    """
    excerpt = _short_repr(value)
    return CleverBadBody(f"{what}: got {excerpt}", request_id=request_id, body_excerpt=excerpt)


def _short_repr(value: object) -> str:
    if isinstance(value, dict):
        return f"an object with keys {safe_excerpt(', '.join(map(str, value)), limit=80)}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return safe_excerpt(repr(value), limit=60)
