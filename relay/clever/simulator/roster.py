"""A district's current records: what its events made them, served by the Data API.

The roster is the single source of both APIs: the event generator edits it and serialises the
record it touched into the event, and ``GET /v3.1/{type}`` pages over it. So a record's state
in the Data API is always what its events (retained or expired) made it, with two exceptions
on purpose: :meth:`Roster.drift` changes records with no event (as Clever's Data API sometimes
does), and a roster built by :class:`Roster` starts with records no event ever created (a
district is shared with its records already there).

Scripted events with an explicit ``object`` apply here too (:meth:`Roster.apply`): ``created``
and ``updated`` put the object in its type's pool (replacing the record of that id), and
``deleted`` removes it. A scripted object the generator could not edit (a partial user with no
``roles``, say) is served like any other record but never picked by the generator or by drift:
they edit records in place and need the fields they edit.

Every pool keeps its ids sorted for the Data API's ``starting_after``/``ending_before``
(``bisect``), built once on the first read (a 50,000-user roster is built without it) and then
kept up to date by every add and remove, so a page costs O(log n + limit) at any size. It
also keeps each record's JSON once served, until an add, a remove or :meth:`Roster.change`
(the one place records are edited in place) makes it stale: a second full read of a large
district joins bytes (0.04 s a page of 10,000 users instead of 0.3 s).
"""

from __future__ import annotations

import bisect
import copy
import gc
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from relay.clever.simulator.records import RECORD_TYPES, Record, RecordFactory, editable

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: the ``role=`` values of ``GET /v3.1/users``: a user matches when ``roles`` has that key
USER_ROLES = ("student", "teacher", "staff", "district_admin", "contact")

#: records at most in a district made by ``POST /_sim/districts`` (memory: about 2 KB each)
MAX_RECORDS = 2_000_000


def _no_facets(record: Record) -> Iterable[str]:
    return ()


def user_roles(record: Record) -> Iterable[str]:
    """The ``role=`` filters a user matches: the keys of its ``roles`` object."""
    roles = record.get("roles")
    return [role for role in roles if role in USER_ROLES] if isinstance(roles, dict) else ()


class Pool:
    """Records of one type: by id, a pick list for the generator, and sorted ids for paging.

    ``items`` is everything the Data API serves. ``keys``/``pos`` hold the *pickable* ids (the
    records the generator and drift may edit or delete), with O(1) add, remove and random pick.
    ``facets`` names the filters a record matches (a user's roles): they never change while a
    record is edited in place (:meth:`RecordFactory.change` keeps a user's role keys), only
    when it is replaced or removed, which go through this class.
    """

    def __init__(self, facets: Callable[[Record], Iterable[str]] = _no_facets) -> None:
        self.keys: list[str] = []
        self.pos: dict[str, int] = {}
        self.items: dict[str, Record] = {}
        self._facets = facets
        self._sorted: list[str] | None = None  # None: built on the next read
        self._by_facet: dict[str, list[str]] = {}
        self._json: dict[str, bytes] = {}  # records as served, until they change

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, rid: object) -> bool:
        return rid in self.items

    @property
    def pickable(self) -> int:
        return len(self.keys)

    def add(self, record: Record, pickable: bool = True) -> Record:
        """Put ``record`` in the pool, replacing the record of its id if there is one."""
        rid: str = record["id"]
        self._json.pop(rid, None)
        old = self.items.get(rid)
        if old is not None:
            self._unindex(rid, old)
            if not pickable:
                self._unpick(rid)
        if pickable and rid not in self.pos:
            self.pos[rid] = len(self.keys)
            self.keys.append(rid)
        self.items[rid] = record
        self._index(rid, record)
        return record

    def remove(self, rid: str) -> Record | None:
        """Take the record out of the pool; None if it was not there."""
        record = self.items.pop(rid, None)
        if record is None:
            return None
        self._json.pop(rid, None)
        self._unpick(rid)
        self._unindex(rid, record)
        if self._sorted is not None:
            del self._sorted[bisect.bisect_left(self._sorted, rid)]
        return record

    def touch(self, rid: str) -> None:
        """Say that the record of ``rid`` was edited in place (its served JSON is stale)."""
        self._json.pop(rid, None)

    def json(self, rid: str) -> bytes:
        """The record as the Data API serves it, encoded once until it changes: a second
        full read of a large district joins bytes instead of encoding 100,000 records."""
        raw = self._json.get(rid)
        if raw is None:
            raw = self._json[rid] = _encode(self.items[rid]).encode()
        return raw

    def pick(self, rng: random.Random) -> Record:
        """A random pickable record (the pool must have one)."""
        return self.items[self.keys[rng.randrange(len(self.keys))]]

    def _unpick(self, rid: str) -> None:
        i = self.pos.pop(rid, None)
        if i is None:
            return
        last = self.keys.pop()
        if last != rid:
            self.keys[i] = last
            self.pos[last] = i

    def _index(self, rid: str, record: Record) -> None:
        if self._sorted is None:
            return
        i = bisect.bisect_left(self._sorted, rid)
        if i == len(self._sorted) or self._sorted[i] != rid:
            self._sorted.insert(i, rid)
        for facet in self._facets(record):
            bisect.insort(self._by_facet.setdefault(facet, []), rid)

    def _unindex(self, rid: str, record: Record) -> None:
        if self._sorted is None:
            return
        for facet in self._facets(record):
            ids = self._by_facet[facet]
            del ids[bisect.bisect_left(ids, rid)]

    def sorted_ids(self, facet: str | None = None) -> list[str]:
        """Every id (or those matching ``facet``) in ascending order; don't mutate it."""
        if self._sorted is None:
            self._sorted = sorted(self.items)
            self._by_facet = {}
            for rid in self._sorted:
                for each in self._facets(self.items[rid]):
                    self._by_facet.setdefault(each, []).append(rid)
        if facet is None:
            return self._sorted
        return self._by_facet.get(facet, [])

    def page(
        self,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        facet: str | None = None,
    ) -> list[str]:
        """The ids of up to ``limit`` records, ascending: after ``starting_after`` (or from
        the first), or, with ``ending_before``, the ``limit`` just before it (still
        ascending)."""
        ids = self.sorted_ids(facet)
        lo = bisect.bisect_right(ids, starting_after) if starting_after else 0
        hi = bisect.bisect_left(ids, ending_before) if ending_before else len(ids)
        return ids[max(lo, hi - limit) : hi] if ending_before else ids[lo : min(hi, lo + limit)]


@dataclass
class RosterSize:
    """How many records a new district starts with.

    The users are one district admin, per school ``students_per_school`` students,
    ``teachers_per_school`` teachers and one contact per ten students, and one staff member:
    ``schools * (students + teachers + ceil(students / 10)) + 2``.

    The large district of the Data API benchmarks (:data:`LARGE_DISTRICT`) is 50 schools of
    820 students, 98 teachers and 990 sections, 400 courses, 4 terms and 43 resources:
    50,002 users, 49,500 sections, and 100,000 records with the district itself.
    """

    schools: int = 3
    students_per_school: int = 30
    teachers_per_school: int = 4
    sections_per_school: int = 6
    courses: int = 6
    terms: int = 2
    resources: int = 3

    def users(self) -> int:
        """How many users the roster starts with."""
        contacts = -(-self.students_per_school // 10)
        return self.schools * (self.students_per_school + self.teachers_per_school + contacts) + 2

    def records(self) -> int:
        """How many records the roster starts with, the district's own included."""
        sections = self.schools * self.sections_per_school
        return (
            self.users() + self.schools + sections + self.courses + self.terms + self.resources + 1
        )

    @classmethod
    def from_json(cls, spec: Any) -> RosterSize:
        """Validate a ``"size"`` object of ``POST /_sim/districts``; missing fields keep their
        defaults. Raises ``ValueError`` naming the field and what it must be."""
        if not isinstance(spec, dict):
            raise ValueError("'size' must be an object of roster sizes")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ValueError(f"unknown size field {unknown[0]!r}; expected {', '.join(names)}")
        size = cls()
        for name in names:
            if name not in spec:
                continue
            value = spec[name]
            least = 1 if name in ("schools", "courses", "terms") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"'size.{name}' must be an integer >= {least}")
            setattr(size, name, value)
        if size.records() > MAX_RECORDS:
            raise ValueError(
                f"'size' makes {size.records():,} records; at most {MAX_RECORDS:,} per district"
            )
        return size


LARGE_DISTRICT = RosterSize(
    schools=50,
    students_per_school=820,
    teachers_per_school=98,
    sections_per_school=990,
    courses=400,
    terms=4,
    resources=43,
)


@dataclass
class Drift:
    """What :meth:`Roster.drift` changed: ``(record type, id)`` pairs, with no event."""

    created: list[tuple[str, str]] = field(default_factory=list)
    updated: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)


class Roster:
    """A district's current records, which the generator creates, edits and deletes.

    ``pools["districts"]`` holds the district's own record while the district shares itself
    with the app (``districts.deleted`` takes it out, ``districts.created`` puts it back);
    ``district`` is that record either way, the one ``districts.*`` events carry.
    """

    def __init__(self, factory: RecordFactory, district: Record, size: RosterSize) -> None:
        self.factory = factory
        self.district = district
        self.pools: dict[str, Pool] = {
            t: Pool(user_roles if t == "users" else _no_facets) for t in RECORD_TYPES
        }
        self.pools["districts"].add(district, pickable=False)
        # Records hold no cycles: the collector would only walk the growing roster again and
        # again (a quarter of building 100,000 records).
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._build(size)
        finally:
            if collecting:
                gc.enable()

    def _build(self, size: RosterSize) -> None:
        factory, did = self.factory, self.district["id"]
        for _ in range(max(1, size.courses)):
            self.pools["courses"].add(factory.course(did))
        for i in range(max(1, size.terms)):
            self.pools["terms"].add(factory.term(did, 2024 + i // 2))
        for _ in range(size.resources):
            self.pools["resources"].add(factory.resource(did))
        users = self.pools["users"]
        users.add(factory.district_admin(did))
        school_ids = [
            self.pools["schools"].add(factory.school(did))["id"]
            for _ in range(max(1, size.schools))
        ]
        for sid in school_ids:
            studs = [
                users.add(factory.student(did, sid))["id"] for _ in range(size.students_per_school)
            ]
            teach = [
                users.add(factory.teacher(did, sid))["id"] for _ in range(size.teachers_per_school)
            ]
            for _ in range(size.sections_per_school):
                self._add_section(sid, studs, teach)
            for i in range(0, len(studs), 10):
                users.add(factory.contact(did, studs[i : i + 2]))
        if school_ids:
            users.add(factory.staff(did, school_ids[:2]))

    # -- reading -------------------------------------------------------------------------------
    @property
    def shared(self) -> bool:
        """Whether the district's own record is in ``GET /v3.1/districts``."""
        return self.district["id"] in self.pools["districts"]

    def share(self, shared: bool) -> None:
        """Show (``districts.created``) or hide (``districts.deleted``) the district record."""
        if shared:
            self.pools["districts"].add(self.district, pickable=False)
        else:
            self.pools["districts"].remove(self.district["id"])

    def counts(self) -> dict[str, int]:
        """Records served per type."""
        return {t: len(pool) for t, pool in self.pools.items()}

    def school_ids(self) -> list[str]:
        return list(self.pools["schools"].keys)

    def some_teacher(self, school: object, tries: int = 16) -> str | None:
        """A teacher of ``school``, found by sampling the users (cheap at any roster size),
        or None if a few picks found none."""
        users = self.pools["users"]
        for _ in range(tries if users.pickable else 0):
            user = users.pick(self.factory.rng)
            role = user["roles"].get("teacher")
            if isinstance(role, dict) and role.get("school") == school:
                return str(user["id"])
        return None

    # -- changes with an event -----------------------------------------------------------------
    def apply(self, event_type: str, obj: Record) -> None:
        """A scripted event's effect: ``created``/``updated`` put ``obj`` (the caller's copy:
        the roster keeps it and may edit it) in its type's pool, ``deleted`` removes the
        record of its id. The district's own id replaces or hides the district record."""
        record_type, action = event_type.split(".", 1)
        rid = obj["id"]
        own = record_type == "districts" and rid == self.district["id"]
        pool = self.pools[record_type]
        if action == "deleted":
            pool.remove(rid)
            return
        if own:
            self.district = obj
        pool.add(obj, pickable=record_type != "districts" and editable(record_type, obj))

    def creatable(self, record_type: str) -> str:
        """The type to create for a ``<record_type>.created``: a section needs a school, a
        course and a term to refer to, so with none left (scripted deletes can empty a pool)
        one of those is created instead."""
        if record_type == "sections":
            for needed in ("schools", "courses", "terms"):
                if not self.pools[needed].pickable:
                    return needed
        return record_type

    def _add_section(self, school: str, students: list[str], teachers: list[str]) -> Record:
        """A section of ``school`` taught by one of ``teachers``, with 3 to 12 of
        ``students`` (distinct ids)."""
        f, rng = self.factory, self.factory.rng
        course = self.pools["courses"].pick(rng)
        term = self.pools["terms"].pick(rng)["id"]
        picked = f.sample(students, min(len(students), 3 + int(rng.random() * 10)))
        teach = [teachers[int(rng.random() * len(teachers))]] if teachers else []
        section = f.section(self.district["id"], school, course, term, picked, teach)
        return self.pools["sections"].add(section)

    def create(self, record_type: str) -> Record:
        """A new record of ``record_type`` (which :meth:`creatable` returned), in its pool."""
        f, rng, did = self.factory, self.factory.rng, self.district["id"]
        schools = self.school_ids()
        if record_type == "users":
            if not schools:
                return self.pools["users"].add(f.district_admin(did))
            school = rng.choice(schools)
            roll = rng.random()
            if roll < 0.7:
                extra = [rng.choice(schools)] if rng.random() < 0.1 else []
                return self.pools["users"].add(f.student(did, school, extra))
            if roll < 0.88:
                return self.pools["users"].add(f.teacher(did, school))
            if roll < 0.95:
                return self.pools["users"].add(f.contact(did, []))
            return self.pools["users"].add(f.staff(did, [school]))
        if record_type == "sections":
            school = rng.choice(schools)
            users = self.pools["users"]
            studs: list[str] = []
            teach: list[str] = []
            for _ in range(min(20, users.pickable)):
                user = users.pick(rng)
                roles = user["roles"]
                if roles.get("student", {}).get("school") == school:
                    studs.append(user["id"])
                elif roles.get("teacher", {}).get("school") == school:
                    teach.append(user["id"])
            return self._add_section(school, list(dict.fromkeys(studs)), teach)
        maker = {
            "schools": f.school,
            "courses": f.course,
            "terms": f.term,
            "resources": f.resource,
        }[record_type]
        return self.pools[record_type].add(maker(did))

    def change(self, record_type: str, record: Record) -> Record:
        """Edit ``record`` in place as Clever would; return its ``previous_attributes``.

        Every in-place edit of a served record goes through here (events and drift alike),
        so that its pool serves the new JSON."""
        teacher = self.some_teacher(record.get("school")) if record_type == "sections" else None
        prev = self.factory.change(record_type, record, self.school_ids(), teacher)
        self.pools[record_type].touch(record["id"])
        return prev

    # -- changes with no event -----------------------------------------------------------------
    def drift(
        self,
        created: int = 0,
        updated: int = 0,
        deleted: int = 0,
        record_types: Sequence[str] = RECORD_TYPES,
    ) -> Drift:
        """Change records with no event, as Clever's Data API sometimes does.

        ``deleted`` records are removed (never the last pickable one of a pool; never the
        district's own record), ``updated`` ones edited in place as :meth:`change` does (the
        district's own record too, while shared; always a visible change, for a sync to
        find), then ``created`` ones added; each record changes at most once, so the three
        lists are disjoint. Each change falls on a random record of ``record_types`` (so the
        big pools, users and sections, take most of them), a creation on a type weighted by
        its size (a section with no school, course or term to refer to creates that first).
        Raises ``ValueError`` before changing anything when the pools are too small for the
        counts. Only pickable records drift: a scripted partial object stays as scripted.
        """
        _check_types(record_types)
        rng = self.factory.rng
        types = [t for t in RECORD_TYPES if t in record_types]
        pools = self.pools
        own = "districts" in types and self.shared
        deletable = {t: max(0, pools[t].pickable - 1) for t in types if t != "districts"}
        if deleted > sum(deletable.values()):
            raise ValueError(
                f"only {sum(deletable.values())} records of {', '.join(types)} can drift by "
                "deletion (the last of each type stays)"
            )
        editable_count = sum(pools[t].pickable for t in types if t != "districts") + own
        if updated > editable_count - deleted:
            raise ValueError(
                f"only {editable_count - deleted} records of {', '.join(types)} can drift by an "
                "update besides the deleted ones"
            )
        creatable = [t for t in types if t != "districts"]
        if created and not creatable:
            raise ValueError("districts cannot drift by creation; name another record type")
        out = Drift()
        touched: set[str] = set()
        for _ in range(deleted):
            record_type = _weighted(rng, deletable)
            pool = pools[record_type]
            record = _untouched(rng, pool, touched)
            pool.remove(record["id"])
            deletable[record_type] -= 1
            out.deleted.append((record_type, record["id"]))
        left = {t: pools[t].pickable for t in types if t != "districts"}
        if own:
            left["districts"] = 1
        for record_type, record in self._sample_untouched(rng, left, touched, updated):
            old = copy.deepcopy(record)
            for _ in range(16):  # an edit may draw the value it replaces: draw again
                self.change(record_type, record)
                if record != old:
                    break
            out.updated.append((record_type, record["id"]))
        for _ in range(created):
            record_type = _weighted(rng, {t: len(pools[t]) + 1 for t in creatable})
            made = self.creatable(record_type)
            out.created.append((made, self.create(made)["id"]))
        return out

    def _sample_untouched(
        self, rng: random.Random, left: dict[str, int], touched: set[str], count: int
    ) -> list[tuple[str, Record]]:
        out: list[tuple[str, Record]] = []
        for _ in range(count):
            record_type = _weighted(rng, left)
            if record_type == "districts":
                record = self.district
                touched.add(record["id"])
            else:
                record = _untouched(rng, self.pools[record_type], touched)
            left[record_type] -= 1
            out.append((record_type, record))
        return out


def _check_types(record_types: Sequence[str]) -> None:
    unknown = [t for t in record_types if t not in RECORD_TYPES]
    if unknown or not record_types:
        raise ValueError(
            f"'record_types' must list some of {', '.join(RECORD_TYPES)}"
            + (f"; unknown {unknown[0]!r}" if unknown else "")
        )


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    """A key drawn with probability proportional to its (non-negative) weight."""
    keys = [k for k, w in weights.items() if w > 0]
    return rng.choices(keys, [weights[k] for k in keys])[0]


def _untouched(rng: random.Random, pool: Pool, touched: set[str]) -> Record:
    """A random pickable record not in ``touched`` (which it joins); the caller knows one
    exists. Draws at random first (a drift is small next to its pool), then scans."""
    for _ in range(32):
        record = pool.pick(rng)
        if record["id"] not in touched:
            break
    else:
        record = pool.items[next(k for k in pool.keys if k not in touched)]
    touched.add(record["id"])
    return record
