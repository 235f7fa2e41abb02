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

import random
import time
from typing import Any

Record = dict[str, Any]

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


_second_cache: list[Any] = [-1, ""]


def iso_ms(ts: float) -> str:
    """``2023-03-26T16:08:05.609Z`` (Clever's millisecond timestamps)."""
    second = int(ts)
    if _second_cache[0] != second:
        _second_cache[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second_cache[1]}.{int(ts * 1000) % 1000:03d}Z"


class RecordFactory:
    """Builds and edits the records of one roster, from a shared seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._serial = 0
        self.clock: float | None = None  # "now" for generated timestamps; None = real time

    # -- small helpers -------------------------------------------------------------------------
    def object_id(self, ts: float | None = None) -> str:
        """A 24-hex, ObjectId-like record id (time prefix between 2017 and 2022)."""
        stamp = int(ts) if ts is not None else self.rng.randint(1_490_000_000, 1_660_000_000)
        return f"{stamp:08x}{self.rng.getrandbits(64):016x}"

    def now(self) -> str:
        """Timestamp for ``last_modified`` etc.: the event's time (backlogs are in the past)."""
        return iso_ms(time.time() if self.clock is None else self.clock)

    def _past(self) -> str:
        return iso_ms(self.rng.uniform(1_500_000_000, 1_640_000_000))

    def _digits(self, n: int) -> str:
        return f"{self.rng.randrange(10**n):0{n}d}"

    def _name(self, middle: bool = True) -> dict[str, str]:
        name = {"first": self.rng.choice(FIRST), "last": self.rng.choice(LAST)}
        if middle:
            name["middle"] = self.rng.choice("ABCDEFGHJKLMNPRSTW")
        return name

    def _location(self, with_street: bool = True) -> dict[str, str]:
        city, state, zip_prefix = self.rng.choice(CITIES)
        street = f"{self.rng.randint(1, 999)} {self.rng.choice(STREETS)} Street"
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
        label = name or f"#SIM {self.rng.choice(LAST)} Unified School District"
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
            "sis_type": self.rng.choice(("sftp", "oneroster", "api")),
            "state": "running",
            "nces_id": self._digits(7),
            "mdr_number": self._digits(8),
        }

    def school(self, district: str) -> Record:
        self._serial += 1
        number = f"{self.rng.randint(10, 32)}K{self._serial:03d}"
        principal = self._name(middle=False)
        low = self.rng.choice(("Kindergarten", "TransitionalKindergarten", "6", "9"))
        high = {"Kindergarten": "5", "TransitionalKindergarten": "5", "6": "8", "9": "12"}[low]
        return {
            **self._base(district),
            "ext": {"charter_school": self.rng.choice(YN)},
            "high_grade": high,
            "low_grade": low,
            "location": self._location(),
            "name": f"{self.rng.choice(STREETS)} {LEVEL[high]} School",
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
        rng = self.rng
        sis = self._digits(9)
        schools = sorted({school, *(other_schools or [])})
        body: dict[str, Any] = {
            "credentials": {"district_username": f"stu{self._digits(6)}"},
            "dob": f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(2006, 2019)}",
            "enrollments": [
                {"school": s, "start_date": "2023-08-21T00:00:00.000Z"} for s in schools
            ],
            "ext": {"gifted_status": self.rng.choice(YN)},
            "ell_status": self.rng.choice(YN),
            "frl_status": self.rng.choice(("Free", "Reduced", "Paid", "")),
            "gender": self.rng.choice(("M", "F", "X")),
            "grade": self.rng.choice(GRADES),
            "graduation_year": str(self.rng.randint(2025, 2037)),
            "hispanic_ethnicity": self.rng.choice(YN),
            "iep_status": "",
            "location": self._location(with_street=False),
            "race": self.rng.choice(RACES),
            "school": school,
            "schools": schools,
            "section_504_status": self.rng.choice(YN),
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
            "title": self.rng.choice(("Teacher", "Lead Teacher", "")),
        }
        return self._user(district, "teacher", body)

    def staff(self, district: str, schools: list[str]) -> Record:
        sid = self._digits(6)
        body = {
            "credentials": {"district_username": f"stf{sid}"},
            "department": self.rng.choice(("Counseling", "Library", "Front Office")),
            "ext": {},
            "roles": ["staff"],
            "schools": sorted(schools),
            "staff_id": sid,
            "title": self.rng.choice(("Counselor", "Librarian", "Secretary")),
        }
        return self._user(district, "staff", body, middle=False)

    def district_admin(self, district: str) -> Record:
        return self._user(district, "district_admin", {"title": "Superintendent"}, middle=False)

    def contact(self, district: str, students: list[str]) -> Record:
        """A contact as real Clever sends it: the spec's fields plus ``relationship``,
        ``students`` and ``type`` (those of the first relationship), and no school."""
        relationship = self.rng.choice(("Parent", "Grandparent", "Aunt/Uncle", "Other"))
        kind = self.rng.choice(("Parent/Guardian", "Family", "Emergency"))
        body = {
            "legacy_id": self.object_id(),
            "phone": f"(718) 555-{self._digits(4)}",
            "phone_type": self.rng.choice(("Cell", "Home", "Work", "Other")),
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
        subject = self.rng.choice(SUBJECTS).split("/")[0].title()
        return {
            "id": self.object_id(),
            "district": district,
            "name": f"{subject} {self.rng.randint(1, 4)}",
            "number": self._digits(4),
        }

    def term(self, district: str, year: int | None = None) -> Record:
        year = year or self.rng.randint(2023, 2025)
        half = self.rng.choice((("Fall", "08-21", "12-20"), ("Spring", "01-08", "06-14")))
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
            "grade": self.rng.choice(GRADES),
            "name": f"{course['name']} - Period {self.rng.randint(1, 8)}",
            "period": str(self.rng.randint(1, 8)),
            "school": school,
            "section_number": sis,
            "sis_id": sis,
            "students": sorted(students),
            "subject": self.rng.choice(SUBJECTS),
            "teacher": teachers[0] if teachers else None,
            "teachers": teachers,
            "term_id": term,
        }

    def resource(self, district: str) -> Record:
        title = self.rng.choice(("Reading Plus", "Math Lab", "Science Sims", "Typing Club"))
        return {
            "id": self.object_id(),
            "district": district,
            "created": self._past(),
            "updated": self.now(),
            "resource_id": f"res-{self._digits(6)}",
            "roles": self.rng.choice((["student"], ["teacher"], ["student", "teacher"])),
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
            prev["last_sync"] = record["last_sync"]
            record["last_sync"] = self.now()
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
