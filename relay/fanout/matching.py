"""Which subscriptions an event is for (``docs/architecture.md``, "Matching").

A subscription filters on record type, action, district and school; an empty filter dimension
matches everything. The school dimension is the subtle one: a record's schools are read both
*after* the change (``data.object``) and *before* it (``data.previous_attributes``), so a
student moved from school A to school B reaches the subscribers of A (who must learn the student
left) and of B (who must learn the student arrived). Records tied to no school at all (districts,
courses, terms, resources, and users whose roles carry no school, such as contacts and district
admins) pass any school filter; subscribers exclude them with ``record_types``.

Events come straight from Clever and are stored as received, so every accessor here is defensive:
an odd shape (missing keys, a list where a dict was expected, a number where an id was expected)
yields "no school" or "no match", never an exception that would stall a district's poll.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

RECORD_TYPES: tuple[str, ...] = (
    "users",
    "sections",
    "schools",
    "courses",
    "terms",
    "districts",
    "resources",
)
ACTIONS: tuple[str, ...] = ("created", "updated", "deleted")
EVENT_TYPES: tuple[str, ...] = tuple(f"{r}.{a}" for r in RECORD_TYPES for a in ACTIONS)

#: Record types whose records can be tied to schools; every other type is school-less.
SCHOOL_RECORD_TYPES: frozenset[str] = frozenset({"users", "sections", "schools"})


def split_type(event_type: object) -> tuple[str, str]:
    """``"users.updated"`` -> ``("users", "updated")``; anything malformed -> ``("", "")``."""
    if not isinstance(event_type, str):
        return "", ""
    record_type, dot, action = event_type.partition(".")
    if not dot:
        return event_type, ""
    return record_type, action


def _as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ids(value: object) -> Iterator[str]:
    """Yield ``value`` if it is a non-empty string, or its non-empty string items if a list."""
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, str) and item:
                yield item


def _role_schools(record: Mapping[str, Any]) -> Iterator[str]:
    """Every ``school`` and ``schools[]`` under ``record["roles"][<role>]``."""
    for role in _as_mapping(record.get("roles")).values():
        if isinstance(role, Mapping):
            yield from _ids(role.get("school"))
            yield from _ids(role.get("schools"))


def _schools_of(record_type: str, record: Mapping[str, Any]) -> Iterator[str]:
    if record_type == "schools":
        yield from _ids(record.get("id"))
    elif record_type == "sections":
        yield from _ids(record.get("school"))
    elif record_type == "users":
        yield from _role_schools(record)


def record_schools(event: Mapping[str, Any]) -> frozenset[str]:
    """The schools the event's record belonged to before or after the change.

    ``event`` is the raw Clever event ``{"id", "type", "created", "data": {"object",
    "previous_attributes"?}}``. Returns an empty set for school-less record types and for
    anything malformed.
    """
    if not isinstance(event, Mapping):
        return frozenset()
    record_type, _ = split_type(event.get("type"))
    if record_type not in SCHOOL_RECORD_TYPES:
        return frozenset()
    data = _as_mapping(event.get("data"))
    after = _as_mapping(data.get("object"))
    before = _as_mapping(data.get("previous_attributes"))
    return frozenset(_schools_of(record_type, after)) | frozenset(_schools_of(record_type, before))


@dataclass(frozen=True, slots=True)
class Filter:
    """A subscription's filter; an empty set in any dimension means "all"."""

    record_types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    districts: frozenset[str] = frozenset()
    schools: frozenset[str] = frozenset()

    def matches(self, event: Mapping[str, Any], district_id: str) -> bool:
        """Whether ``event`` (a raw Clever event of district ``district_id``) is wanted."""
        if not isinstance(event, Mapping):
            return False
        record_type, action = split_type(event.get("type"))
        if not self._matches_type(record_type, action, district_id):
            return False
        # Computing schools is the only non-trivial step: do it last, and only when needed.
        return not self.schools or self.matches_schools(record_schools(event))

    def matches_facts(
        self, record_type: str, action: str, district_id: str, schools: frozenset[str]
    ) -> bool:
        """Like :meth:`matches` with the event's facts precomputed (one event, many filters)."""
        return self._matches_type(record_type, action, district_id) and self.matches_schools(
            schools
        )

    def matches_schools(self, schools: frozenset[str]) -> bool:
        """School rule: no filter, a school-less record, or any overlap before/after."""
        return not self.schools or not schools or not self.schools.isdisjoint(schools)

    def _matches_type(self, record_type: str, action: str, district_id: str) -> bool:
        return (
            (not self.record_types or record_type in self.record_types)
            and (not self.actions or action in self.actions)
            and (not self.districts or district_id in self.districts)
        )
