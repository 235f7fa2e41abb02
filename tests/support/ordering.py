"""What ordered delivery is checked against: a scripted burst of roster changes, a receiver
that times every request and answer, and the two counts that say whether a record's events
arrived in Clever's order."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.clever.simulator import Simulator
from tests.support.events import sim_events

ACTIONS = ("created", "updated", "updated", "updated", "deleted")


def script_burst(sim: Simulator, district_id: str, records: int) -> dict[str, list[str]]:
    """``records`` students, each created, updated three times and deleted, interleaved as a
    busy day at Clever would be (every student's creation, then the first updates, ...).
    Returns each record's event ids in Clever's order."""
    specs: list[dict[str, Any]] = []
    for step, action in enumerate(ACTIONS):
        for n in range(records):
            student = {"id": f"{n:024x}", "name": {"first": f"S{n}", "last": f"v{step}"}}
            spec: dict[str, Any] = {"type": f"users.{action}", "object": student}
            if action == "updated":
                spec["previous_attributes"] = {"name": {"last": f"v{step - 1}"}}
            specs.append(spec)
    sim.add_events(district_id, specs)
    return chains_of(sim_events(sim, district_id))


def chains_of(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    chains: dict[str, list[str]] = {}
    for event in sorted(events, key=lambda e: e["id"]):
        chains.setdefault(event["data"]["object"]["id"], []).append(event["id"])
    return chains


@dataclass(frozen=True)
class Answered:
    path: str
    event_id: str
    record_id: str
    arrived: float
    answered: float
    status: int


@dataclass
class TimingReceiver:
    """Answers after ``latency`` seconds: 500 to every request for a record in
    ``failing_records``, 500 to the first request (per path) for an event in
    ``fail_first``, else 204; keeps when each request arrived and was answered."""

    latency: float = 0.015
    fail_first: Collection[str] = ()
    failing_records: Collection[str] = ()
    log: list[Answered] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            arrived = time.monotonic()
            body = json.loads(await request.body())
            event_id, path = body["id"], request.url.path
            record_id = body["data"]["object"]["id"]
            with self.lock:
                first = (path, event_id) not in self._seen
                self._seen.add((path, event_id))
            failing = record_id in self.failing_records or (first and event_id in self.fail_first)
            await asyncio.sleep(self.latency)
            status = 500 if failing else 204
            with self.lock:
                self.log.append(
                    Answered(path, event_id, record_id, arrived, time.monotonic(), status)
                )
            return Response(status_code=status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])

    def requests(self, path: str) -> list[Answered]:
        with self.lock:
            return [a for a in self.log if a.path == path]

    def succeeded(self, path: str) -> set[str]:
        return {a.event_id for a in self.requests(path) if a.status < 300}


@dataclass(frozen=True)
class OrderReport:
    out_of_order: int  # records whose events were first received out of Clever's order
    early: int  # requests for event k sent before event k-1 was answered 2xx

    def __str__(self) -> str:
        return f"{self.out_of_order} records out of order, {self.early} early requests"


def order_report(requests: list[Answered], chains: dict[str, list[str]]) -> OrderReport:
    first_arrival: dict[str, float] = {}
    first_ok: dict[str, float] = {}
    for a in requests:
        first_arrival[a.event_id] = min(first_arrival.get(a.event_id, a.arrived), a.arrived)
        if a.status < 300:
            first_ok[a.event_id] = min(first_ok.get(a.event_id, a.answered), a.answered)
    previous = {later: before for c in chains.values() for before, later in itertools.pairwise(c)}
    early = sum(
        1
        for a in requests
        if a.event_id in previous and a.arrived < first_ok.get(previous[a.event_id], float("inf"))
    )
    out_of_order = sum(
        1
        for chain in chains.values()
        if [first_arrival.get(e, float("inf")) for e in chain]
        != sorted(first_arrival.get(e, float("inf")) for e in chain)
    )
    return OrderReport(out_of_order, early)


def every_fifth(chains: dict[str, list[str]]) -> set[str]:
    """Every fifth event of the burst, in Clever's order."""
    ordered = sorted(e for chain in chains.values() for e in chain)
    return set(ordered[::5])


def when(predicate: Callable[[], bool]) -> Callable[[], Any]:
    """``predicate`` as the async condition ``wait_for`` takes."""

    async def condition() -> bool:
        return predicate()

    return condition
