"""Realistic Clever v3.1 records (districts, schools, users, sections...) and their changes.

Shapes follow Clever's v3.1 spec and the real responses in ``clever-recorded/``: a user is
``{"id", "district", "email", "name": {...}, "roles": {"student": {...}}, ...}``, a section
carries ``school``, ``students[]``, ``teachers[]``, ``course`` and ``term_id``. Everything is
drawn from one seeded :class:`random.Random`, so a seed gives the same roster every time.

:func:`RecordFactory.change` edits a record in place and returns the ``previous_attributes``
Clever would send: the changed leaves, nested; arrays whole; ``name`` sometimes whole; a
student's ``school`` change also carries ``schools``.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Sequence
from typing import Any, TypeVar

Record = dict[str, Any]
T = TypeVar("T")
_POWERS = [10**n for n in range(20)]

RECORD_TYPES = ("users", "sections", "schools", "courses", "terms", "districts", "resources")
ACTIONS = ("created", "updated", "deleted")

FIRST = (  # noqa: SIM905 - word lists read better as text
    "Naomi Anthony Amelie Liam Olivia Noah Emma Mateo Ava Elijah Sofia Lucas Mia Ethan "
    "Isabella Aiden Harper Jackson Camila Leo Aria Grayson Layla Ezra Chloe Kai Nora Owen "
    "Zoe Ravi Mei Diego Fatima Yusuf Hana"
).split()
LAST = (  # noqa: SIM905 - word lists read better as text
    "Schulist Corwin Zeng Gerlach Nguyen Garcia Smith Johnson Okafor Patel Kim Rossi Novak "
    "Hernandez Cohen Walker Young Lopez Baker Rivera Chen Singh Murphy Kowalski Haddad Sato "
    "Fischer Dubois Moreno Ali"
).split()
STREETS = (  # noqa: SIM905 - word lists read better as text
    "Pineapple Orange Cranberry Willow Hicks Henry Clinton Atlantic Court Smith"
).split()
CITIES = (("Brooklyn", "NY", "112"), ("Queens", "NY", "114"), ("Austin", "TX", "787"))
RACES = (
    "Caucasian",
    "Asian",
    "Black or African American",
    "American Indian",
    "Hawaiian or Other Pacific Islander",
    "Two or More Races",
    "Unknown",
)
SUBJECTS = (
    "english/language arts",
    "math",
    "science",
    "social studies",
    "language",
    "arts and music",
    "PE and health",
    "technology and engineering",
)
LEVEL = {"5": "Elementary", "8": "Middle", "12": "High"}
GRADES = ("Kindergarten", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12")
YN = ("Y", "N", "")
SCOPES = (
    "read:district_admins_basic",
    "read:school_admins_basic",
    "read:students_basic",
    "read:teachers_basic",
    "read:user_id",
)


@functools.lru_cache(maxsize=8192)
def _day(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(days * 86_400))


_last_second: list[Any] = [-1, ""]  # the last second formatted: "now" repeats it


def iso_ms(ts: float) -> str:
    """``2023-03-26T16:08:05.609Z`` (Clever's millisecond timestamps). Cheap, as a large
    roster stamps 200,000 of them: the last second and each day's date are kept formatted
    (records are stamped now, or at random past times)."""
    second, ms = divmod(int(ts * 1000), 1000)
    if _last_second[0] != second:
        days, rest = divmod(second, 86_400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        _last_second[:] = [second, f"{_day(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}"]
    return f"{_last_second[1]}.{ms:03d}Z"


class RecordFactory:
    """Builds and edits the records of one roster, from a shared seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._random = rng.random
        self._pasts: list[str] = []
        self._serial = 0
        self.clock: float | None = None  # "now" for generated timestamps; None = real time

    # -- small helpers -------------------------------------------------------------------------
    def _pick(self, seq: Sequence[T]) -> T:
        """``rng.choice``, a tenth of its cost (a 100,000-record roster makes 700,000 picks)."""
        return seq[int(self._random() * len(seq))]

    def _int(self, low: int, high: int) -> int:
        """``rng.randint(low, high)``, as cheaply as :meth:`_pick`."""
        return low + int(self._random() * (high - low + 1))

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """``k`` distinct items of ``seq`` (``k`` small next to it, as a section's students
        out of a school's), without ``rng.sample``'s cost per call."""
        n = len(seq)
        if k * 3 > n:
            return self.rng.sample(seq, k)
        chosen: dict[int, None] = {}
        while len(chosen) < k:
            chosen[int(self._random() * n)] = None
        return [seq[i] for i in chosen]

    def object_id(self, ts: float | None = None) -> str:
        """A 24-hex, ObjectId-like record id (time prefix between 2017 and 2022)."""
        stamp = int(ts) if ts is not None else self._int(1_490_000_000, 1_660_000_000)
        return f"{stamp:08x}{self.rng.getrandbits(64):016x}"

    def now(self) -> str:
        """Timestamp for ``last_modified`` etc.: the event's time (backlogs are in the past)."""
        return iso_ms(time.time() if self.clock is None else self.clock)

    def _past(self) -> str:
        """A ``created`` time between 2017 and 2021: one of 4,096 drawn for this factory (as
        Clever's come in batches, one per SIS import), to keep rosters cheap to build."""
        if not self._pasts:
            self._pasts = [
                iso_ms(1_500_000_000 + self._random() * 140_000_000) for _ in range(4096)
            ]
        return self._pasts[int(self._random() * 4096)]

    def _digits(self, n: int) -> str:
        power = _POWERS[n]
        return str(int(self._random() * power) + power)[1:]

    def _name(self, middle: bool = True) -> dict[str, str]:
        name = {"first": self._pick(FIRST), "last": self._pick(LAST)}
        if middle:
            name["middle"] = self._pick("ABCDEFGHJKLMNPRSTW")
        return name

    def _location(self, with_street: bool = True) -> dict[str, str]:
        city, state, zip_prefix = self._pick(CITIES)
        street = f"{self._int(1, 999)} {self._pick(STREETS)} Street"
        return {
            "address": street if with_street else "",
            "city": city if with_street else "",
            "state": state if with_street else "",
            "zip": zip_prefix + self._digits(2),
        }

    def _base(self, district: str) -> Record:
        return {
            "id": self.object_id(),
            "district": district,
            "created": self._past(),
            "last_modified": self.now(),
        }

    # -- records -------------------------------------------------------------------------------
    def district(self, name: str | None = None) -> Record:
        did = self.object_id()
        label = name or f"#SIM {self._pick(LAST)} Unified School District"
        contact = self._name(middle=False)
        return {
            "id": did,
            "name": label,
            "district_contact": {
                "district": did,
                "email": f"{contact['first'].lower()}.{contact['last'].lower()}@example.org",
                "id": self.object_id(),
                "name": contact,
                "title": "Director of Technology",
            },
            "error": "",
            "last_sync": self.now(),
            "launch_date": "2017-07-31",
            "login_methods": ["Clever Passwords"],
            "portal_url": f"https://clever.com/in/sim-{did[-8:]}",
            "sis_type": self._pick(("sftp", "oneroster", "api")),
            "state": "running",
            "nces_id": self._digits(7),
            "mdr_number": self._digits(8),
        }

    def school(self, district: str) -> Record:
        self._serial += 1
        number = f"{self._int(10, 32)}K{self._serial:03d}"
        principal = self._name(middle=False)
        low = self._pick(("Kindergarten", "TransitionalKindergarten", "6", "9"))
        high = {"Kindergarten": "5", "TransitionalKindergarten": "5", "6": "8", "9": "12"}[low]
        return {
            **self._base(district),
            "ext": {"charter_school": self._pick(YN)},
            "high_grade": high,
            "low_grade": low,
            "location": self._location(),
            "name": f"{self._pick(STREETS)} {LEVEL[high]} School",
            "phone": f"(718) 555-{self._digits(4)}",
            "principal": {
                "email": f"{principal['first'].lower()}{principal['last'][0].lower()}@example.org",
                "name": f"{principal['first']} {principal['last']}",
            },
            "school_number": number,
            "sis_id": number,
            "state_id": self._digits(5),
            "nces_id": self._digits(12),
            "mdr_number": self._digits(8),
        }

    def _user(self, district: str, role: str, body: dict[str, Any], middle: bool = True) -> Record:
        name = self._name(middle)
        n = self._digits(2)
        user = {
            **self._base(district),
            "email": f"{name['last'][0].lower()}_{name['first'].lower()}{n}@example.com",
            "name": name,
            "roles": {role: body},
        }
        return user

    def student(self, district: str, school: str, other_schools: list[str] | None = None) -> Record:
        sis = self._digits(9)
        schools = sorted({school, *(other_schools or [])})
        body: dict[str, Any] = {
            "credentials": {"district_username": f"stu{self._digits(6)}"},
            "dob": f"{self._int(1, 12)}/{self._int(1, 28)}/{self._int(2006, 2019)}",
            "enrollments": [
                {"school": s, "start_date": "2023-08-21T00:00:00.000Z"} for s in schools
            ],
            "ext": {"gifted_status": self._pick(YN)},
            "ell_status": self._pick(YN),
            "frl_status": self._pick(("Free", "Reduced", "Paid", "")),
            "gender": self._pick(("M", "F", "X")),
            "grade": self._pick(GRADES),
            "graduation_year": str(self._int(2025, 2037)),
            "hispanic_ethnicity": self._pick(YN),
            "iep_status": "",
            "location": self._location(with_street=False),
            "race": self._pick(RACES),
            "school": school,
            "schools": schools,
            "section_504_status": self._pick(YN),
            "sis_id": sis,
            "state_id": self._digits(9),
            "student_number": sis,
        }
        return self._user(district, "student", body)

    def teacher(self, district: str, school: str) -> Record:
        sis = self._digits(6)
        body = {
            "credentials": {"district_username": f"tch{sis}"},
            "ext": {},
            "school": school,
            "schools": [school],
            "sis_id": sis,
            "state_id": self._digits(8),
            "teacher_number": sis,
            "title": self._pick(("Teacher", "Lead Teacher", "")),
        }
        return self._user(district, "teacher", body)

    def staff(self, district: str, schools: list[str]) -> Record:
        sid = self._digits(6)
        body = {
            "credentials": {"district_username": f"stf{sid}"},
            "department": self._pick(("Counseling", "Library", "Front Office")),
            "ext": {},
            "roles": ["staff"],
            "schools": sorted(schools),
            "staff_id": sid,
            "title": self._pick(("Counselor", "Librarian", "Secretary")),
        }
        return self._user(district, "staff", body, middle=False)

    def district_admin(self, district: str) -> Record:
        return self._user(district, "district_admin", {"title": "Superintendent"}, middle=False)

    def contact(self, district: str, students: list[str]) -> Record:
        """A contact as real Clever sends it: the spec's fields plus ``relationship``,
        ``students`` and ``type`` (those of the first relationship), and no school."""
        relationship = self._pick(("Parent", "Grandparent", "Aunt/Uncle", "Other"))
        kind = self._pick(("Parent/Guardian", "Family", "Emergency"))
        body = {
            "legacy_id": self.object_id(),
            "phone": f"(718) 555-{self._digits(4)}",
            "phone_type": self._pick(("Cell", "Home", "Work", "Other")),
            "relationship": relationship,
            "sis_id": self._digits(8),
            "student_relationships": [
                {"relationship": relationship, "student": s, "type": kind} for s in students
            ],
            "students": list(students),
            "type": kind,
        }
        return self._user(district, "contact", body, middle=False)

    def course(self, district: str) -> Record:
        subject = self._pick(SUBJECTS).split("/")[0].title()
        return {
            "id": self.object_id(),
            "district": district,
            "name": f"{subject} {self._int(1, 4)}",
            "number": self._digits(4),
        }

    def term(self, district: str, year: int | None = None) -> Record:
        year = year or self._int(2023, 2025)
        half = self._pick((("Fall", "08-21", "12-20"), ("Spring", "01-08", "06-14")))
        y = year if half[0] == "Fall" else year + 1
        return {
            "id": self.object_id(),
            "district": district,
            "name": f"{half[0]} {y}",
            "start_date": f"{y}-{half[1]}",
            "end_date": f"{y}-{half[2]}",
        }

    def section(
        self,
        district: str,
        school: str,
        course: Record,
        term: str,
        students: list[str],
        teachers: list[str],
    ) -> Record:
        self._serial += 1
        sis = f"{self._serial:05d}"
        return {
            **self._base(district),
            "course": course["id"],
            "ext": {},
            "grade": self._pick(GRADES),
            "name": f"{course['name']} - Period {self._int(1, 8)}",
            "period": str(self._int(1, 8)),
            "school": school,
            "section_number": sis,
            "sis_id": sis,
            "students": sorted(students),
            "subject": self._pick(SUBJECTS),
            "teacher": teachers[0] if teachers else None,
            "teachers": teachers,
            "term_id": term,
        }

    def resource(self, district: str) -> Record:
        title = self._pick(("Reading Plus", "Math Lab", "Science Sims", "Typing Club"))
        return {
            "id": self.object_id(),
            "district": district,
            "created": self._past(),
            "updated": self.now(),
            "resource_id": f"res-{self._digits(6)}",
            "roles": self._pick((["student"], ["teacher"], ["student", "teacher"])),
            "title": title,
        }

    # -- changes -------------------------------------------------------------------------------
    def change(
        self, record_type: str, record: Record, schools: list[str], teacher: str | None = None
    ) -> Record:
        """Edit ``record`` in place; return Clever's ``previous_attributes`` for the edit.

        ``schools`` lists the district's current school ids (a student may move between them);
        ``teacher``, for a section, a teacher of its school who may take it over.
        """
        prev: Record = {}
        rng = self.rng
        if record_type == "users":
            self._change_user(record, schools, prev)
        elif record_type == "sections":
            draw = rng.random()
            if draw < 0.4 and record["students"]:
                prev["students"] = list(record["students"])
                record["students"] = record["students"][:-1]
            elif draw < 0.7 and teacher is not None and teacher not in record["teachers"]:
                # a new teacher takes the section over: both fields change, arrays come whole
                prev["teacher"], prev["teachers"] = record["teacher"], list(record["teachers"])
                record["teacher"], record["teachers"] = teacher, [teacher]
            else:
                prev["period"] = record["period"]
                record["period"] = str(rng.randint(1, 8))
        elif record_type == "schools":
            _set(prev, [], record, "phone", f"(718) 555-{self._digits(4)}")
            if rng.random() < 0.5:
                _set(prev, [], record, "ext", {"charter_school": rng.choice(YN)})
        elif record_type == "districts":
            _set(prev, [], record, "last_sync", self.now())
        elif record_type == "courses":
            _set(prev, [], record, "name", f"{record['name'].split(' (')[0]} ({rng.randint(1, 9)})")
        elif record_type == "terms":
            _set(
                prev,
                [],
                record,
                "end_date",
                f"{record['end_date'][:4]}-06-{rng.randint(1, 28):02d}",
            )
        else:  # resources
            _set(
                prev, [], record, "title", f"{record['title'].split(' v')[0]} v{rng.randint(2, 9)}"
            )
        if "last_modified" in record:
            record["last_modified"] = self.now()
        elif "updated" in record:
            record["updated"] = self.now()
        return prev

    def _change_user(self, record: Record, schools: list[str], prev: Record) -> None:
        """A user's edit: a student moving school, a new first name, or a role field."""
        rng = self.rng
        role, body = next(iter(record["roles"].items()))
        if role == "student" and len(schools) > 1 and rng.random() < 0.25:
            self._move_student(record, schools, prev)
        elif rng.random() < 0.15:
            old = dict(record["name"])
            record["name"]["first"] = rng.choice(FIRST)
            prev["name"] = old  # Clever sometimes sends the whole name
        elif role == "student":
            pick = rng.choice(("gender", "grade", "gifted", "ell_status", "frl_status"))
            field, new = {
                "gender": ("gender", rng.choice(("M", "F", "X"))),
                "grade": ("grade", rng.choice(GRADES)),
                "gifted": ("ext", {"gifted_status": rng.choice(YN)}),
                "ell_status": ("ell_status", rng.choice(YN)),
                "frl_status": ("frl_status", rng.choice(("Free", "Reduced", "Paid", ""))),
            }[pick]
            _set(prev, ["roles", "student"], body, field, new)
        elif role == "teacher":
            _set(prev, ["roles", "teacher"], body, "title", rng.choice(("Teacher", "Coach")))
        else:
            old_email = record["email"]
            record["email"] = old_email.replace("@", f".{rng.randint(1, 9)}@", 1)
            prev["email"] = old_email

    def _move_student(self, user: Record, schools: list[str], prev: Record) -> None:
        body = user["roles"]["student"]
        others = [s for s in schools if s != body["school"]]
        new = self.rng.choice(others)
        prev.setdefault("roles", {})["student"] = {
            "school": body["school"],
            "schools": list(body["schools"]),
            "enrollments": list(body["enrollments"]),
        }
        body["school"] = new
        body["schools"] = [new]
        body["enrollments"] = [{"school": new, "start_date": self.now()}]


def editable(record_type: str, record: Record) -> bool:
    """Whether :meth:`RecordFactory.change` (and the section and user picks of the roster)
    can edit ``record``: it has the fields they read. Every generated record has; a scripted
    object may not (``{"id": ..., "name": ...}``)."""
    get = record.get
    if record_type == "users":
        roles, name = get("roles"), get("name")
        if not (isinstance(roles, dict) and roles and isinstance(name, dict)):
            return False
        if not (isinstance(get("email"), str) and all(type(b) is dict for b in roles.values())):
            return False
        student: dict[str, Any] = roles.get("student") or {}
        return next(iter(roles)) != "student" or (
            isinstance(student.get("school"), str)
            and isinstance(student.get("schools"), list)
            and isinstance(student.get("enrollments"), list)
        )
    if record_type == "sections":
        return (
            isinstance(get("students"), list)
            and isinstance(get("teachers"), list)
            and "teacher" in record
            and "period" in record
        )
    if record_type == "courses":
        return isinstance(get("name"), str)
    if record_type == "terms":
        end = get("end_date")
        return isinstance(end, str) and len(end) >= 4
    if record_type == "resources":
        return isinstance(get("title"), str)
    return True  # schools, districts: every edit is a _set


def _set(prev: Record, path: list[str], target: dict[str, Any], field: str, new: Any) -> None:
    """Set ``target[field] = new`` and record the changed old leaves under ``prev[path...]``."""
    old = target.get(field)
    if isinstance(old, dict) and isinstance(new, dict):
        changed = {k: old.get(k) for k, v in new.items() if old.get(k) != v}
        target[field] = {**old, **new}
        old_part: Any = changed or {k: old.get(k) for k in new}
    else:
        target[field] = new
        old_part = old
    node = prev
    for key in path:
        node = node.setdefault(key, {})
    node[field] = old_part


def user_schools(user: Record) -> set[str]:
    """Every school a user belongs to (``school`` and ``schools[]`` under each role)."""
    out: set[str] = set()
    roles = user.get("roles")
    if type(roles) is not dict:
        return out
    for body in roles.values():
        if type(body) is dict:
            school = body.get("school")
            if type(school) is str:
                out.add(school)
            schools = body.get("schools")
            if type(schools) is list:
                out.update(s for s in schools if type(s) is str)
    return out


def record_schools(record_type: str, obj: Record, prev: Record | None = None) -> frozenset[str]:
    """The schools an event touches, before and after the change (used by ``?school=``)."""
    found: set[str] = set()
    for rec in (obj, prev) if prev else (obj,):
        if record_type == "schools" and isinstance(rec.get("id"), str):
            found.add(rec["id"])
        elif record_type == "sections" and isinstance(rec.get("school"), str):
            found.add(rec["school"])
        elif record_type == "users":
            found |= user_schools(rec)
    return frozenset(found)
