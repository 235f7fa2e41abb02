"""The roster filters end to end, as real processes (``relay serve`` and two workers): three
subscriptions created through the API each receive exactly the events an oracle written
apart from the relay picks out of the simulator's history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.settings import Settings
from tests.support.cluster import cluster, statuses
from tests.support.events import sim_events
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, serve


def _previous(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["data"].get("previous_attributes") or {})


def _is_teacher(event: dict[str, Any]) -> bool:
    after = event["data"]["object"].get("roles") or {}
    before = _previous(event).get("roles") or {}
    return event["type"].startswith("users.") and ("teacher" in after or "teacher" in before)


def _teachers_changed(event: dict[str, Any]) -> bool:
    if not event["type"].startswith("sections."):
        return False
    return not event["type"].endswith(".updated") or "teachers" in _previous(event)


def _moved_school(event: dict[str, Any]) -> bool:
    if not event["type"].endswith(".updated"):
        return True
    student = (_previous(event).get("roles") or {}).get("student")
    return isinstance(student, dict) and "school" in student


async def test_roles_and_changed_filters_pick_exactly_their_events(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim, sim_server = simulator
    district = next(iter(sim.districts.values()))
    sim.add_backlog(district.id, 800)
    history = sim_events(sim, district.id)
    expected = {
        "/teachers": {e["id"] for e in history if _is_teacher(e)},
        "/section-teachers": {e["id"] for e in history if _teachers_changed(e)},
        "/moves": {e["id"] for e in history if _moved_school(e)},
    }
    # the history has each kind of change the filters tell apart
    assert any(e["type"] == "sections.updated" for e in history if _teachers_changed(e))
    assert any(e["type"] == "users.updated" for e in history if _moved_school(e))
    receiver = Receiver()
    with (
        serve(receiver.app()) as srv,
        cluster(settings, redis_url, sim_server.url, tmp_path) as relay,
    ):
        relay.subscribe(srv.url + "/teachers", record_types=["users"], roles=["teacher"])
        relay.subscribe(
            srv.url + "/section-teachers", record_types=["sections"], changed=["teachers"]
        )
        relay.subscribe(srv.url + "/moves", changed=["roles.student.school"])
        relay.add_district(district.id, district.token)
        total = sum(len(ids) for ids in expected.values())
        await relay.settled(db, total, 60)
    with receiver.lock:
        got: dict[str, set[str]] = {}
        for r in receiver.received:
            got.setdefault(r.path, set()).add(r.headers["webhook-id"])
    for path, ids in expected.items():
        assert got.get(path, set()) == ids, path
    assert await statuses(db) == {"succeeded": total}
