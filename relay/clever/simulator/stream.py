"""Per-district event stores, ObjectId-like event ids, and the event generator (which
changes the district's roster, ``roster.py``, as each event it makes says).

Ids are 24 hex characters: the first 8 are the unix second of creation, the other 16 a
counter shared by the whole simulator, so within a district ids sort by time and strictly
increase (a district's clock never goes backwards: an event is never stamped earlier than the
district's newest). ``created`` is that second as ``YYYY-MM-DDTHH:MM:SS.000Z``.

Events are serialised once, when they are appended (``StoredEvent.raw``): that snapshots the
record as it was at that moment without a deep copy, and pages are served by joining bytes.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from relay.clever.simulator.records import ACTIONS, RECORD_TYPES, Record, record_schools
from relay.clever.simulator.roster import Roster

EVENT_TYPES = tuple(f"{r}.{a}" for r in RECORD_TYPES for a in ACTIONS)
API_PREFIX = "/v3.1"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# How often each event type is generated (users.updated dominates, as in real districts).
WEIGHTS: dict[str, float] = {
    "users.updated": 45,
    "users.created": 6,
    "users.deleted": 3,
    "sections.updated": 15,
    "sections.created": 3,
    "sections.deleted": 2,
    "schools.updated": 4,
    "schools.created": 0.5,
    "schools.deleted": 0.3,
    "courses.updated": 2,
    "courses.created": 1,
    "courses.deleted": 0.5,
    "terms.updated": 1,
    "terms.created": 0.5,
    "terms.deleted": 0.3,
    "districts.updated": 2,
    "districts.created": 0.1,
    "districts.deleted": 0.05,
    "resources.updated": 1,
    "resources.created": 0.5,
    "resources.deleted": 0.3,
}


def created_at(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def id_time(event_id: str) -> int:
    """The unix second in an ObjectId-like id."""
    return int(event_id[:8], 16)


@dataclass(slots=True)
class StoredEvent:
    id: str
    type: str
    ts: int
    schools: frozenset[str]
    raw: bytes  # the event JSON: {"id","type","created","data":{"object",...}}
    appeared: float  # wall-clock time it became visible

    @property
    def record_type(self) -> str:
        return self.type.split(".", 1)[0]

    def item(self) -> bytes:
        """The list item: ``{"data": <event>, "uri": "/v3.1/events/<id>"}``."""
        return (
            b'{"data":' + self.raw + b',"uri":"' + f"{API_PREFIX}/events/{self.id}".encode() + b'"}'
        )


class IdClock:
    """Hands out strictly increasing ObjectId-like ids."""

    def __init__(self, start: int) -> None:
        self._counter = start

    def next_id(self, ts: int) -> str:
        self._counter += 1
        return f"{ts:08x}{self._counter & 0xFFFF_FFFF_FFFF_FFFF:016x}"


class EventStore:
    """One district's events, oldest first, with O(log n) cursor lookups."""

    def __init__(self, clock: IdClock) -> None:
        self.clock = clock
        self.ids: list[str] = []
        self.events: list[StoredEvent] = []
        self.by_id: dict[str, StoredEvent] = {}
        self.last_ts = 0
        self._created_cache: tuple[int, str] = (-1, "")

    def __len__(self) -> int:
        return len(self.events)

    def append(
        self, type_: str, obj: Record, prev: Record | None, ts: float | None = None
    ) -> StoredEvent:
        second = max(int(ts if ts is not None else time.time()), self.last_ts)
        self.last_ts = second
        event_id = self.clock.next_id(second)
        if self._created_cache[0] != second:
            self._created_cache = (second, created_at(second))
        data = _dumps(obj)
        if prev is not None:
            data += ',"previous_attributes":' + _dumps(prev)
        raw = (
            f'{{"id":"{event_id}","type":"{type_}","created":"{self._created_cache[1]}",'
            f'"data":{{"object":{data}}}}}'
        ).encode()
        schools = record_schools(type_.split(".", 1)[0], obj, prev)
        event = StoredEvent(event_id, type_, second, schools, raw, time.time())
        self.ids.append(event_id)
        self.events.append(event)
        self.by_id[event_id] = event
        return event

    def expire_index(self, index: int) -> int:
        """Drop the ``index`` oldest events; return how many went."""
        index = max(0, min(index, len(self.ids)))
        for event in self.events[:index]:
            del self.by_id[event.id]
        del self.ids[:index]
        del self.events[:index]
        return index

    def expire_before_id(self, event_id: str) -> int:
        return self.expire_index(bisect.bisect_left(self.ids, event_id))

    def expire_before_ts(self, ts: float) -> int:
        return self.expire_index(bisect.bisect_left(self.ids, f"{max(int(ts), 0):08x}"))

    def oldest(self) -> str | None:
        return self.ids[0] if self.ids else None

    def newest(self) -> str | None:
        return self.ids[-1] if self.ids else None

    def page(
        self,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        record_types: frozenset[str] = frozenset(),
        school: str | None = None,
    ) -> list[StoredEvent]:
        """Up to ``limit`` matching events, ascending.

        With ``ending_before`` (an id, or ``"last"`` for the newest) the page is the ``limit``
        events just before it, still ascending; otherwise the ``limit`` events after
        ``starting_after`` (or from the oldest retained).
        """
        lo = bisect.bisect_right(self.ids, starting_after) if starting_after else 0
        hi = len(self.ids)
        if ending_before and ending_before != "last":
            hi = bisect.bisect_left(self.ids, ending_before)
        if lo >= hi:
            return []

        def keep(e: StoredEvent) -> bool:
            if record_types and e.record_type not in record_types:
                return False
            return school is None or school in e.schools

        if not record_types and school is None:
            if ending_before:
                return self.events[max(lo, hi - limit) : hi]
            return self.events[lo : min(hi, lo + limit)]
        out: list[StoredEvent] = []
        rng: Iterator[int] = iter(range(hi - 1, lo - 1, -1) if ending_before else range(lo, hi))
        for i in rng:
            if keep(self.events[i]):
                out.append(self.events[i])
                if len(out) >= limit:
                    break
        if ending_before:
            out.reverse()
        return out


class EventGenerator:
    """Draws plausible events for a roster: ``(type, object, previous_attributes | None)``."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self.rng = roster.factory.rng
        self._types = list(WEIGHTS)
        self._cum: list[float] = []
        total = 0.0
        for t in self._types:
            total += WEIGHTS[t]
            self._cum.append(total)

    def generate(self, type_: str | None = None) -> tuple[str, Record, Record | None]:
        """One event, applied to the roster: ``(type, object, previous_attributes | None)``.

        ``type_`` (default: drawn by :data:`WEIGHTS`) may come out as another: an update or
        delete with nothing to edit, or a delete of a pool's last record, becomes a create;
        any ``districts.*`` of an unshared district shares it again (``districts.created``).
        """
        rng, roster = self.rng, self.roster
        if type_ is None:
            type_ = self._types[bisect.bisect_right(self._cum, rng.random() * self._cum[-1])]
        record_type, action = type_.split(".", 1)
        if record_type == "districts":
            obj = roster.district
            if not roster.shared or action == "created":
                roster.share(True)
                return "districts.created", obj, None
            if action == "deleted":
                roster.share(False)
                return type_, obj, None
            return type_, obj, roster.change("districts", obj)
        pool = roster.pools[record_type]
        if action == "created" or not pool.pickable or (action == "deleted" and pool.pickable <= 1):
            # Never empty a pool: an update of nothing or a delete of the last becomes a create.
            made = roster.creatable(record_type)
            return f"{made}.created", roster.create(made), None
        if action == "deleted":
            obj = pool.pick(rng)
            pool.remove(obj["id"])
            return type_, obj, None
        obj = pool.pick(rng)
        return type_, obj, roster.change(record_type, obj)


def scripted(spec: Any) -> tuple[str, Record | None, Record | None]:
    """Validate one scripted event ``{"type", "object"?, "previous_attributes"?}``.

    Without ``object`` the generator makes an event of that type. An ``object`` needs a
    string ``id`` (the record it sets or deletes in the roster, as the relay needs one too)
    and comes back as a copy, which the roster keeps: the caller's dict is never edited by
    later events.
    """
    if not isinstance(spec, dict):
        raise ValueError("each scripted event must be an object")
    type_ = spec.get("type")
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}; expected one of {', '.join(EVENT_TYPES)}")
    obj = spec.get("object")
    prev = spec.get("previous_attributes")
    if obj is not None:
        if not isinstance(obj, dict):
            raise ValueError("'object' must be a JSON object")
        if not isinstance(obj.get("id"), str) or not obj["id"]:
            raise ValueError("'object' needs a string 'id'")
        try:
            obj = json.loads(_dumps(obj))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"'object' must be plain JSON: {exc}") from exc
    if prev is not None and not isinstance(prev, dict):
        raise ValueError("'previous_attributes' must be a JSON object")
    return type_, obj, prev
