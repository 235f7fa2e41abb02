"""The fault-scenario runner: a simulated Clever (uvicorn thread), real ``relay worker``
subprocesses, receivers that misbehave as told, and :func:`assert_no_loss`, the end-of-run
check every scenario shares.

A scenario registers districts and subscriptions straight in the database (no API process:
the API is not what these tests exercise), starts workers, disturbs something, then waits for
the relay to settle and checks that nothing was lost:

- the cursor skipped nothing: the events stored for each district are exactly the
  simulator's, and the district's cursor is Clever's newest id;
- every matching event has a delivery for every subscription, and each delivery ended where
  its receiver's behaviour says it must (``succeeded``; ``failed`` with every scheduled attempt
  recorded for a receiver that never recovers; failed with 410 or parked for a ``410 Gone``);
- nothing is stuck: no delivery waits with a next attempt in the past beyond a grace period.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import undefer
from sqlmodel import col, select

from relay.clever.simulator import Simulator, SimulatorConfig, create_app
from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, District, Event, Subscription
from relay.delivery.signing import generate_secret
from relay.fanout.matching import Filter
from tests.support.config import ADMIN_TOKEN, ENCRYPTION_KEY
from tests.support.processes import RelayProcess
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, free_port, serve

#: Short timings for every scenario (README's variables); a scenario may override any.
FAST_ENV = {
    "RELAY_POLL_INTERVAL": "0.2",
    "RELAY_POLL_LEASE": "2",
    "RELAY_RETRY_SCHEDULE": "0.3,0.5,1",
    "RELAY_DELIVERY_TIMEOUT": "1",
    "RELAY_RECONCILE_INTERVAL": "1",
    "RELAY_LOG_LEVEL": "INFO",
}
WAITING = ("pending", "retrying")
#: How long a delivery may sit past its due time before it counts as stuck. Generous: a
#: SIGKILLed worker's in-flight job comes back once its claim lapses
#: (RELAY_DELIVERY_TIMEOUT + 15 s), and a lost one after a reconciler run.
STUCK_GRACE = timedelta(seconds=30)

Answer = tuple[int, dict[str, str], float]


def per_event(receiver: Receiver, answer: Callable[[int], Answer]) -> None:
    """Make ``receiver`` answer the k-th request (0-based) for each ``webhook-id`` with
    ``answer(k)``: "fail twice, then succeed" per event, whatever the arrival order."""
    seen: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def responder(n: int) -> Answer:
        with receiver.lock:
            webhook_id = receiver.received[n].headers.get("webhook-id", "")
        with lock:
            k = seen[webhook_id]
            seen[webhook_id] += 1
        return answer(k)

    receiver.responder = responder


@dataclass
class Hook:
    """A subscription, its receiver (None for a closed port) and what must become of its
    deliveries: ``succeeded``, ``failed`` (never recovers: every attempt recorded) or
    ``gone`` (410: the subscription is disabled)."""

    name: str
    subscription: Subscription
    expect: str
    receiver: Receiver | None = None

    @property
    def id(self) -> str:
        return self.subscription.id

    def filter(self) -> Filter:
        sub = self.subscription
        return Filter(
            record_types=frozenset(sub.record_types),
            actions=frozenset(sub.actions),
            districts=frozenset(sub.districts),
            schools=frozenset(sub.schools),
        )


@dataclass
class Summary:
    events: int
    deliveries: dict[str, dict[str, int]]  # hook name -> status -> count
    attempts: int


def sim_events(sim: Simulator, district_id: str) -> list[dict[str, Any]]:
    return [json.loads(e.raw) for e in sim.districts[district_id].store.events]


def expected_event_ids(sim: Simulator, district_ids: Iterable[str], hook: Hook) -> set[str]:
    wanted = hook.filter()
    return {
        event["id"]
        for district_id in district_ids
        for event in sim_events(sim, district_id)
        if wanted.matches(event, district_id)
    }


async def _rows(db: Database, query: Any) -> list[Any]:
    async with db.read() as session:
        return list((await session.exec(query)).all())


async def stuck_deliveries(db: Database, grace: timedelta = STUCK_GRACE) -> list[Delivery]:
    """Deliveries waiting with a next attempt further in the past than ``grace``."""
    cutoff = utcnow() - grace
    return await _rows(
        db,
        select(Delivery)
        .where(col(Delivery.status).in_(WAITING))
        .where(col(Delivery.next_attempt_at) < cutoff)
        .order_by(col(Delivery.id))
        .limit(20),
    )


async def assert_no_loss(
    db: Database,
    sim: Simulator,
    district_ids: Sequence[str],
    hooks: Sequence[Hook],
    *,
    attempts_when_failed: int,
    grace: timedelta = STUCK_GRACE,
) -> Summary:
    """The end-of-scenario check (see the module docstring). ``attempts_when_failed`` is the
    schedule's attempt count (delays + 1): what a never-recovering receiver's deliveries must
    show. Returns counts for the test's printout."""
    # 1. The cursor skipped nothing: stored ids == Clever's ids, district by district.
    for district_id in district_ids:
        clever_ids = list(sim.districts[district_id].store.ids)
        stored = await _rows(
            db, select(Event.id).where(Event.district_id == district_id).order_by(col(Event.id))
        )
        missing_ids = sorted(set(clever_ids) - set(stored))
        extra = sorted(set(stored) - set(clever_ids))
        differ = (
            f"district {district_id}: stored events differ from Clever's: "
            f"{len(missing_ids)} missing (first {missing_ids[:5]}), {len(extra)} unexpected "
            f"(first {extra[:5]}); {len(stored)} stored, {len(clever_ids)} at Clever"
        )
        assert not missing_ids, differ
        assert not extra, differ
        assert stored == clever_ids
        async with db.read() as session:
            district = await session.get(District, district_id)
        assert district is not None
        assert district.cursor == (clever_ids[-1] if clever_ids else None), (
            f"district {district_id}: cursor {district.cursor} is not Clever's newest "
            f"{clever_ids[-1] if clever_ids else None}"
        )
        assert district.status == "active", (district.status, district.last_error)

    # 2. Every matching event reached every subscription, or ended as the receiver dictates.
    summary: dict[str, dict[str, int]] = {}
    for hook in hooks:
        expected = expected_event_ids(sim, district_ids, hook)
        rows: list[Delivery] = await _rows(
            db, select(Delivery).where(Delivery.subscription_id == hook.id)
        )
        async with db.read() as session:
            sub = await session.get(Subscription, hook.id)
        assert sub is not None
        by_event = {d.event_id: d for d in rows}
        assert len(by_event) == len(rows), f"{hook.name}: an event has two deliveries"
        counted = collections.Counter(d.status for d in rows)
        summary[hook.name] = dict(counted)
        unexpected = set(by_event) - expected
        assert not unexpected, f"{hook.name}: deliveries for events it does not match"
        missing = expected - set(by_event)
        if hook.expect == "gone":
            # 410 disables the subscription; events stored after that get no delivery.
            disabled = (
                f"{hook.name}: a 410 should disable the subscription: "
                f"enabled={sub.enabled} reason={sub.disabled_reason!r}"
            )
            assert not sub.enabled, disabled
            assert "410" in (sub.disabled_reason or ""), disabled
            for d in rows:
                parked = d.status in WAITING and d.next_attempt_at is None
                gone = d.status == "failed" and d.last_status_code == 410
                assert parked or gone, f"{hook.name}: delivery {_show(d)} neither 410 nor parked"
            continue
        assert not missing, (
            f"{hook.name}: {len(missing)} of {len(expected)} matching events have no delivery "
            f"(first {sorted(missing)[:5]})"
        )
        assert sub.enabled, f"{hook.name}: subscription disabled: {sub.disabled_reason}"
        if hook.expect == "succeeded":
            not_done = [_show(d) for d in rows if d.status != "succeeded"]
            assert not not_done, (
                f"{hook.name}: {len(not_done)} deliveries did not succeed: {not_done[:5]}; "
                f"statuses {dict(counted)}"
            )
            assert hook.receiver is not None
            received = {
                body["id"] for body in hook.receiver.verified(hook.subscription.secret)
            }  # raises unless every request verifies
            assert expected <= received, (
                f"{hook.name}: succeeded, but the receiver never got "
                f"{sorted(expected - received)[:5]}"
            )
        elif hook.expect == "failed":
            wrong = [
                _show(d) for d in rows if d.status != "failed" or d.attempts != attempts_when_failed
            ]
            assert not wrong, (
                f"{hook.name}: every delivery should be failed after {attempts_when_failed} "
                f"attempts: {wrong[:5]}; statuses {dict(counted)}"
            )
        else:
            raise AssertionError(f"unknown expectation {hook.expect!r}")

    # 3. Every attempt is on record: one attempt row per counted attempt.
    recorded = dict(
        await _rows(
            db,
            select(DeliveryAttempt.delivery_id, func.count()).group_by(
                col(DeliveryAttempt.delivery_id)
            ),
        )
    )
    every: list[Delivery] = await _rows(db, select(Delivery))
    mismatched = [_show(d) for d in every if recorded.get(d.id, 0) != d.attempts]
    assert not mismatched, f"attempt rows differ from attempt counts: {mismatched[:5]}"

    # 4. Nothing stuck.
    stuck = await stuck_deliveries(db, grace)
    assert not stuck, f"deliveries stuck past their due time: {[_show(d) for d in stuck]}"
    return Summary(
        events=sum(len(sim.districts[d].store) for d in district_ids),
        deliveries=summary,
        attempts=sum(recorded.values()),
    )


def _show(d: Delivery) -> str:
    due = d.next_attempt_at.isoformat(timespec="seconds") if d.next_attempt_at else None
    return (
        f"#{d.id} event={d.event_id} status={d.status} attempts={d.attempts} "
        f"next_attempt_at={due} last_status={d.last_status_code}"
    )


@dataclass
class Scenario:
    """One run: ``with Scenario(...) as run:`` serves the simulator; add districts and hooks,
    start workers, disturb, then ``await run.settle()`` and ``await run.check()``."""

    db: Database
    database_url: str
    redis_url: str
    logs: Path
    seed: int = 0
    env: dict[str, str] = field(default_factory=dict)
    districts: int = 1
    backlog: int = 0
    sim_config: dict[str, Any] = field(default_factory=dict)
    hooks: list[Hook] = field(default_factory=list)
    workers: list[RelayProcess] = field(default_factory=list)
    district_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        config = SimulatorConfig(districts=self.districts, seed=self.seed, **self.sim_config)
        self.sim = Simulator(config)
        self.stack = ExitStack()
        self.clever: ServerThread | None = None
        self._worker_count = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Scenario:
        self.clever = self.stack.enter_context(serve(create_app(self.sim)))
        self.stack.callback(self.stop_workers)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    @property
    def clever_url(self) -> str:
        assert self.clever is not None, "use the scenario as a context manager"
        return self.clever.url

    def worker_env(self) -> dict[str, str]:
        return (
            FAST_ENV
            | {
                "RELAY_DATABASE_URL": self.database_url,
                "RELAY_REDIS_URL": self.redis_url,
                "RELAY_CLEVER_API_URL": self.clever_url,
                "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
                "RELAY_SECRET_KEY": "test-secret-key",
                "RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
                "RELAY_DATA_DIR": str(self.logs / "data"),
            }
            | self.env
        )

    @property
    def schedule_attempts(self) -> int:
        return len(self.worker_env()["RELAY_RETRY_SCHEDULE"].split(",")) + 1

    # -- setup ---------------------------------------------------------------------------------
    async def add_districts(self, backlog: int = 0) -> list[str]:
        """Register every simulated district (from its earliest event), ``backlog`` each."""
        for district in self.sim.districts.values():
            if backlog:
                self.sim.add_backlog(district.id, backlog)
            async with self.db.write() as session:
                session.add(District(id=district.id, token=district.token, start_from="earliest"))
            self.district_ids.append(district.id)
        return self.district_ids

    async def hook(
        self,
        name: str,
        expect: str = "succeeded",
        answer: Callable[[int], Answer] | None = None,
        *,
        closed_port: bool = False,
        owner: str = "faults",
        **filters: Any,
    ) -> Hook:
        """A subscription with its receiver; ``answer(k)`` gives the k-th answer per event
        (default 204 at once). ``closed_port``: nothing ever listens at the URL."""
        receiver: Receiver | None = None
        if closed_port:
            url = f"http://127.0.0.1:{free_port()}/closed"
        else:
            receiver = Receiver()
            if answer is not None:
                per_event(receiver, answer)
            server = self.stack.enter_context(serve(receiver.app()))
            url = f"{server.url}/{name}"
        sub = Subscription(owner=owner, url=url, secret=generate_secret(), **filters)
        async with self.db.write() as session:
            session.add(sub)
        async with self.db.read() as session:  # with its secret, which the ORM loads if asked
            stored = await session.get(Subscription, sub.id, options=[undefer(Subscription.secret)])
        assert stored is not None
        hook = Hook(name, stored, expect, receiver)
        self.hooks.append(hook)
        return hook

    # -- workers -------------------------------------------------------------------------------
    def start_worker(self, log_level: str = "INFO") -> RelayProcess:
        """``log_level`` DEBUG shows arq's line per cron job (quiet at INFO)."""
        self._worker_count += 1
        log = self.logs / f"worker-{self._worker_count}.log"
        worker = RelayProcess(["--log-level", log_level, "worker"], self.worker_env(), log)
        self.workers.append(worker)
        return worker

    def start_workers(self, n: int, log_level: str = "INFO") -> None:
        for _ in range(n):
            self.start_worker(log_level)

    def running(self) -> list[RelayProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    def kill_random_worker(self) -> RelayProcess:
        victim = self.rng.choice(self.running())
        victim.kill()
        return victim

    def stop_workers(self) -> None:
        """SIGTERM to every worker at once, then wait for each."""
        for worker in self.running():
            worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()

    async def all_logged(self, text: str) -> bool:
        """Whether every running worker's log contains ``text``."""
        return all(text in w.output() for w in self.running())

    def logs_tail(self, chars: int = 2500) -> str:
        return "\n".join(
            f"--- {w.log.name} (pid {w.proc.pid}, rc {w.proc.poll()}):\n{w.output()[-chars:]}"
            for w in self.workers[-3:]
        )

    # -- Clever --------------------------------------------------------------------------------
    def set_event_rate(self, per_second: float) -> None:
        self.sim.events_per_second = per_second

    def quiesce_clever(self) -> None:
        """Stop generating events and injecting faults (before the final wait)."""
        self.sim.events_per_second = 0
        self.sim.faults.clear()

    # -- waiting -------------------------------------------------------------------------------
    async def wait(
        self, what: str, condition: Callable[[], Awaitable[bool]], timeout: float = 60
    ) -> None:
        """Wait for ``condition``; fail naming ``what`` with the relay's state and logs."""
        deadline = time.monotonic() + timeout
        while not await condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout:g}s still waiting for: {what}\n"
                    f"{await self.describe()}\n{self.logs_tail()}"
                )
            await asyncio.sleep(0.1)

    async def stored_count(self) -> int:
        async with self.db.read() as session:
            clever = select(func.count()).select_from(Event).where(col(Event.owner).is_(None))
            return int((await session.exec(clever)).one())

    async def received_at_least(self, n: int) -> bool:
        return sum(len(h.receiver.received) for h in self.hooks if h.receiver) >= n

    async def settle(self, timeout: float = 90) -> None:
        """Stop Clever's event flow, then wait until every event is stored, every delivery
        that must exist exists, and none is waiting for another attempt."""
        self.quiesce_clever()
        await asyncio.sleep(0.2)  # an in-flight generator tick
        await self.wait("the relay to store Clever's events", self._caught_up, timeout)
        await self.wait("every delivery to finish", self._deliveries_done, timeout)

    async def _caught_up(self) -> bool:
        for district_id in self.district_ids:
            async with self.db.read() as session:
                district = await session.get(District, district_id)
            if (
                district is None
                or district.cursor != self.sim.districts[district_id].store.newest()
            ):
                return False
        return True

    async def _deliveries_done(self) -> bool:
        for hook in self.hooks:
            if hook.expect == "gone":
                continue
            expected = len(expected_event_ids(self.sim, self.district_ids, hook))
            have = await _rows(
                self.db,
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.subscription_id == hook.id),
            )
            if have[0] < expected:
                return False
        waiting = await _rows(
            self.db,
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.status).in_(WAITING))
            .where(col(Delivery.next_attempt_at).is_not(None)),
        )
        return int(waiting[0]) == 0

    async def describe(self) -> str:
        """The relay's state for a failure message: districts, statuses per hook, and the
        deliveries that are still waiting (oldest due first)."""
        lines = []
        async with self.db.read() as session:
            for district in (await session.exec(select(District))).all():
                newest = self.sim.districts[district.id].store.newest()
                lines.append(
                    f"district {district.id}: status={district.status} cursor={district.cursor} "
                    f"(Clever newest {newest}) lease={district.lease_owner} "
                    f"last_error={district.last_error!r}"
                )
            for hook in self.hooks:
                rows = (
                    await session.exec(
                        select(Delivery.status, func.count())
                        .where(Delivery.subscription_id == hook.id)
                        .group_by(col(Delivery.status))
                    )
                ).all()
                lines.append(f"hook {hook.name} ({hook.expect}): {dict(rows)}")
            waiting = (
                await session.exec(
                    select(Delivery)
                    .where(col(Delivery.status).in_(WAITING))
                    .where(col(Delivery.next_attempt_at).is_not(None))
                    .order_by(col(Delivery.next_attempt_at))
                    .limit(10)
                )
            ).all()
        now = utcnow()
        for d in waiting:
            late = (now - d.next_attempt_at).total_seconds() if d.next_attempt_at else 0.0
            lines.append(f"  waiting: {_show(d)} ({late:.1f}s past due)")
        return "\n".join(lines)

    async def check(self) -> Summary:
        summary = await assert_no_loss(
            self.db,
            self.sim,
            self.district_ids,
            self.hooks,
            attempts_when_failed=self.schedule_attempts,
        )
        print(f"\n{summary}")
        return summary


def attempt_times(rows: Sequence[DeliveryAttempt]) -> dict[int, list[datetime]]:
    """Attempt times per delivery, in order."""
    out: dict[int, list[datetime]] = collections.defaultdict(list)
    for row in sorted(rows, key=lambda r: (r.delivery_id, r.id or 0)):
        out[row.delivery_id].append(row.attempted_at)
    return out


async def attempts_of(db: Database, hook: Hook) -> list[DeliveryAttempt]:
    ids = select(Delivery.id).where(Delivery.subscription_id == hook.id)
    return await _rows(db, select(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(ids)))


#: the ``make_scenario`` fixture: ``make_scenario(seed=…, env=…, redis_url=…, db=…)``
ScenarioFactory = Callable[..., Scenario]
