"""The simulator's events as the tests read them, and facts about them computed apart from
``relay.fanout.matching`` (an oracle for the matching tests)."""

from __future__ import annotations

import json
from typing import Any

from relay.clever.simulator import Simulator
from relay.fanout.matching import record_schools


def sim_events(sim: Simulator, district_id: str) -> list[dict[str, Any]]:
    return [json.loads(e.raw) for e in sim.districts[district_id].store.events]


def moved_out_of(event: dict[str, Any], school: str) -> bool:
    """A user whose old schools include ``school`` and whose new ones do not."""
    roles = event["data"]["object"].get("roles", {})
    now = {s for r in roles.values() for s in [r.get("school"), *r.get("schools", [])] if s}
    return (
        school in record_schools(event) and school not in now and event["type"].startswith("users.")
    )
