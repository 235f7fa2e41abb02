"""Which subscriptions an event is for (``docs/architecture.md``, "Matching").

A subscription filters on record type, action, district and school; an empty filter dimension
matches everything. The school dimension is the subtle one: a record's schools are read both
*after* the change (``data.object``) and *before* it (``data.previous_attributes``), so a
student moved from school A to school B reaches the subscribers of A (who must learn the student
left) and of B (who must learn the student arrived). Records tied to no school at all (districts,
courses, terms, resources, and users whose roles carry no school, such as contacts and district
admins) pass any school filter; subscribers exclude them with ``record_types``.

Two filters speak Clever's roster. ``roles`` passes a ``users.*`` event whose user holds a
listed role before or after the change (other record types pass it); ``changed`` passes an
``*.updated`` event whose ``previous_attributes`` holds a listed dotted path or something below
it (``created`` and ``deleted`` events pass it: exclude them with ``actions``).

Events come straight from Clever and are stored as received, so every accessor here is defensive:
an odd shape (missing keys, a list where a dict was expected, a number where an id was expected)
yields "no school" or "no match", never an exception that would stall a district's poll.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
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

#: The roles a Clever user can hold (the keys of ``object.roles``).
ROLES: tuple[str, ...] = ("student", "teacher", "staff", "district_admin", "contact")
#: A ``changed`` filter entry: a dotted field path such as ``roles.student.school``.
FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

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


def object_schools(record_type: str, record: object) -> frozenset[str]:
    """The schools a record (an event's ``data.object``, a Data API record) belongs to."""
    return frozenset(_schools_of(record_type, _as_mapping(record)))


def object_roles(record: object) -> frozenset[str]:
    """The roles a user record holds (the keys of its ``roles``)."""
    return frozenset(k for k in _as_mapping(_as_mapping(record).get("roles")) if isinstance(k, str))


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


def previous_attributes(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data.previous_attributes`` (what an update changed), or empty."""
    if not isinstance(event, Mapping):
        return {}
    return _as_mapping(_as_mapping(event.get("data")).get("previous_attributes"))


def record_roles(event: Mapping[str, Any]) -> frozenset[str]:
    """The roles a ``users.*`` event's user held before or after the change (the keys of
    ``object.roles`` and of ``previous_attributes.roles``); empty for anything else."""
    if not isinstance(event, Mapping) or split_type(event.get("type"))[0] != "users":
        return frozenset()
    after = _as_mapping(_as_mapping(_as_mapping(event.get("data")).get("object")).get("roles"))
    before = _as_mapping(previous_attributes(event).get("roles"))
    return frozenset(k for k in (*after, *before) if isinstance(k, str))


def parse_path(path: str) -> tuple[str, ...]:
    """``"roles.student.school"`` -> ``("roles", "student", "school")``; ValueError when it is
    not a dotted field path."""
    if not isinstance(path, str) or not FIELD_PATH.fullmatch(path):
        raise ValueError(f"{path!r} is not a dotted field path such as roles.student.school")
    return tuple(path.split("."))


def holds_path(previous: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether ``previous_attributes`` holds ``path``, or something below it (``roles``
    holds every change under ``roles``). A whole object or array counts as holding what is
    inside it: Clever sends some changed objects whole."""
    node: object = previous
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


@dataclass(frozen=True, slots=True)
class Facts:
    """What the filters look at in one event, computed once for all subscriptions."""

    record_type: str
    action: str
    district_id: str
    schools: frozenset[str]
    roles: frozenset[str]
    previous: Mapping[str, Any]

    @classmethod
    def of(cls, event: Mapping[str, Any], district_id: str) -> Facts:
        record_type, action = split_type(event.get("type"))
        return cls(
            record_type,
            action,
            district_id,
            record_schools(event),
            record_roles(event),
            previous_attributes(event),
        )


@dataclass(frozen=True, slots=True)
class Filter:
    """A subscription's filter; an empty set in any dimension means "all"."""

    record_types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    districts: frozenset[str] = frozenset()
    schools: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    changed: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def changed_paths(cls, paths: Iterable[str]) -> tuple[tuple[str, ...], ...]:
        return tuple(parse_path(p) for p in paths)

    def matches(self, event: Mapping[str, Any], district_id: str) -> bool:
        """Whether ``event`` (a raw Clever event of district ``district_id``) is wanted."""
        if not isinstance(event, Mapping):
            return False
        record_type, action = split_type(event.get("type"))
        if not self._matches_type(record_type, action, district_id):
            return False
        # The record's schools, roles and changes are read only when a filter asks for them.
        if self.schools and not self.matches_schools(record_schools(event)):
            return False
        if self.roles and record_type == "users" and self.roles.isdisjoint(record_roles(event)):
            return False
        return not self.changed or action != "updated" or self._changes(previous_attributes(event))

    def matches_facts(self, facts: Facts) -> bool:
        """Like :meth:`matches` with the event's facts precomputed (one event, many filters)."""
        return (
            self._matches_type(facts.record_type, facts.action, facts.district_id)
            and self.matches_schools(facts.schools)
            and self.matches_roles(facts.record_type, facts.roles)
            and (not self.changed or facts.action != "updated" or self._changes(facts.previous))
        )

    def matches_schools(self, schools: frozenset[str]) -> bool:
        """School rule: no filter, a school-less record, or any overlap before/after."""
        return not self.schools or not schools or not self.schools.isdisjoint(schools)

    def matches_roles(self, record_type: str, roles: frozenset[str]) -> bool:
        """Role rule: no filter, not a user, or a listed role held before or after."""
        return not self.roles or record_type != "users" or not self.roles.isdisjoint(roles)

    def _changes(self, previous: Mapping[str, Any]) -> bool:
        return any(holds_path(previous, path) for path in self.changed)

    def _matches_type(self, record_type: str, action: str, district_id: str) -> bool:
        return (
            (not self.record_types or record_type in self.record_types)
            and (not self.actions or action in self.actions)
            and (not self.districts or district_id in self.districts)
        )
