"""Parse Clever Data API list pages (``GET /v3.1/{type}``) from the raw JSON, strictly.

A sync compares what these pages hold with the roster and turns every difference into an
event, so a page read wrong is worse than a page not read: a record skipped here becomes a
``deleted`` sent to every subscriber. Anything that would make the comparison or the paging
wrong (not the envelope, an item without a record, a record without a usable id) is refused as
``CleverBadBody``, never skipped. Each record is kept exactly as received (it becomes the
``data.object`` of the events a sync stores); only its ``id`` is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from relay._exceptions import CleverBadBody
from relay.clever.events import bad_json, is_valid_event_id, safe_excerpt
from relay.clever.ratelimit import RateLimit

__all__ = ["DATA_TYPES", "RecordsPage", "parse_records_page"]

#: Every record type a district sync reads, in the order it reads them: the district first, the
#: records others point to (schools, users) before those that point to them (sections).
DATA_TYPES: tuple[str, ...] = (
    "districts",
    "schools",
    "users",
    "sections",
    "courses",
    "terms",
    "resources",
)


@dataclass(frozen=True)
class RecordsPage:
    """One page of a Data API list: the records in the order Clever sent them (ascending id).

    ``records`` stays out of the repr: they are student records, and a page may be logged.
    """

    records: list[dict[str, Any]] = field(repr=False)
    rate_limit: RateLimit | None = None
    request_id: str | None = None

    @property
    def last_id(self) -> str | None:
        """The ``starting_after`` of the next request, or None for an empty page (the end).

        The highest id rather than blindly the last one: equal for Clever's ascending pages,
        and a page that ever arrived out of order can't send the next request backwards into
        records already read (an endless sync).
        """
        ids: list[str] = [record["id"] for record in self.records]
        return max(ids, default=None)


def parse_records_page(
    body: bytes | str,
    *,
    record_type: str,
    rate_limit: RateLimit | None = None,
    request_id: str | None = None,
    redact: Iterable[str] = (),
) -> RecordsPage:
    """Parse ``{"data": [{"data": <record>, "uri": "/v3.1/<type>/<id>"}, ...], "links": [...]}``.

    ``record_type`` (one of ``DATA_TYPES``) names the list in messages. ``redact``: strings
    (the token) that must not appear in an error's excerpt of the body. ``links`` is not read:
    the next page is asked for by ``last_id``.

    One other shape is an empty page: ``{"resources": []}``, which Clever's v3.0 sent for
    ``GET /resources`` to an app with no resources (no ``data``, no ``links``; the spec says
    otherwise). Only for ``resources``, and only empty: for any other type it would read as
    "every record gone", and what a non-empty one holds has never been seen.
    """
    if record_type not in DATA_TYPES:
        raise ValueError(f"record_type must be one of {', '.join(DATA_TYPES)}")
    document = _load_json(body, record_type, request_id, redact)
    if not isinstance(document, dict):
        raise _bad(f"{record_type} page is not an object", document, request_id)
    if "data" not in document and "resources" in document and record_type == "resources":
        if document["resources"] != []:
            raise _bad(
                "resources page has a non-empty 'resources' list, a shape never seen",
                document["resources"],
                request_id,
            )
        return RecordsPage(records=[], rate_limit=rate_limit, request_id=request_id)
    items = document.get("data")
    if not isinstance(items, list):
        raise _bad(f"{record_type} page is not an object with a 'data' list", document, request_id)
    records: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"{record_type} page item {index}"
        record = item.get("data") if isinstance(item, dict) else None
        if not isinstance(record, dict):
            raise _bad(f"{where} has no 'data' record object", item, request_id)
        # 24 lowercase hex, as an event id: the id is the next request's starting_after, which
        # accepts nothing else, and ids are compared as strings (order, roster keys)
        if not is_valid_event_id(record.get("id")):
            raise _bad(f"{where} has no valid 24-hex 'id'", record.get("id"), request_id, id_=True)
        records.append(record)
    return RecordsPage(records=records, rate_limit=rate_limit, request_id=request_id)


def _load_json(
    body: bytes | str, record_type: str, request_id: str | None, redact: Iterable[str]
) -> Any:
    try:
        # NaN and Infinity become null, as events.py reads them: a record is stored and sent
        # on as JSON every receiver must be able to read
        return json.loads(body, parse_constant=lambda _name: None)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        what = f"{record_type} page: Clever sent"
        raise bad_json(body, exc, request_id=request_id, redact=redact, what=what) from None
    except RecursionError:
        raise CleverBadBody(
            f"{record_type} page: Clever sent JSON nested too deeply to read",
            request_id=request_id,
        ) from None


def _bad(what: str, value: object, request_id: str | None, *, id_: bool = False) -> CleverBadBody:
    """A BadBody naming the place and the shape of the offending value only: records are
    student records (names, emails, birth dates), which have no place in messages or logs.
    An id (``id_``) is shown, cut short: it names a record and says nothing about a person."""
    if isinstance(value, dict):
        excerpt = f"an object with keys {safe_excerpt(', '.join(map(str, value)), limit=80)}"
    elif isinstance(value, list):
        excerpt = f"a list of {len(value)}"
    elif isinstance(value, str) and not id_:
        excerpt = f"a string of {len(value)} characters"
    else:
        excerpt = safe_excerpt(repr(value), limit=60)
    return CleverBadBody(f"{what}: got {excerpt}", request_id=request_id, body_excerpt=excerpt)
