"""A district with an ordered and an unordered subscription, worked directly through the
page store and the attempt recorder, for the ordered-delivery tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from sqlmodel import col, select

from relay.clever.events import CleverEvent
from relay.db import Database
from relay.db.models import WAITING, Delivery, District, Event, Subscription
from relay.delivery.attempt import Attempt
from relay.delivery.record import record_attempts
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import AttemptOutcome
from relay.polling.store import store_page
from relay.queue import Job

SCHEDULE = RetrySchedule.parse("1,1")


T0 = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp())


_SERIAL = itertools.count()


OUTCOMES = {
    "success": AttemptOutcome(status_code=204, duration_ms=1),
    "retry": AttemptOutcome(status_code=500, duration_ms=1, error="http 500"),
    "gone": AttemptOutcome(status_code=410, duration_ms=1, error="http 410"),
}


def event(record: str) -> CleverEvent:
    n = next(_SERIAL)
    event_id = f"{T0 + n:08x}{n:016x}"
    raw = {"id": event_id, "type": "users.updated", "data": {"object": {"id": record}}}
    return CleverEvent(event_id, "users.updated", datetime.fromtimestamp(T0 + n, UTC), raw)


class World:
    """One district polled by worker "A", one ordered and one unordered subscription."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.district = "d" + uuid.uuid4().hex[:8]
        self.ordered = "sub_o" + uuid.uuid4().hex[:8]
        self.unordered = "sub_u" + uuid.uuid4().hex[:8]
        self.cursor: str | None = None

    async def create(self) -> World:
        async with self.db.write() as session:
            session.add(District(id=self.district, token="t", lease_owner="A"))
            for sub_id, ordered in ((self.ordered, True), (self.unordered, False)):
                session.add(
                    Subscription(id=sub_id, owner="o", url="http://x", secret="s", ordered=ordered)
                )
        return self

    async def page(self, records: list[str]) -> list[Job]:
        batch = [event(r) for r in records]
        result = await store_page(
            self.db,
            district_id=self.district,
            lease_owner="A",
            expected_cursor=self.cursor,
            events=batch,
            caught_up=True,
            lease_seconds=30,
        )
        if batch:
            self.cursor = batch[-1].id
        return result.due

    async def deliveries(self, subscription_id: str) -> list[tuple[Delivery, str]]:
        """(delivery, record id), oldest first."""
        async with self.db.read() as session:
            rows = await session.exec(
                select(Delivery, Event.record_id)
                .join(Event, col(Event.id) == col(Delivery.event_id))
                .where(col(Delivery.subscription_id) == subscription_id)
                .order_by(col(Delivery.id))
            )
            return [(d, r or "") for d, r in rows.all()]

    async def finish(self, delivery: Delivery, outcome: AttemptOutcome) -> list[Job]:
        """Record ``outcome`` as the delivery's next attempt; returns the jobs to queue."""
        assert delivery.id is not None
        async with self.db.read() as session:
            sub = await session.get(Subscription, delivery.subscription_id)
        attempt = Attempt(
            job=Job(delivery.id, delivery.attempts + 1),
            status=delivery.status,
            attempts=delivery.attempts,
            manual_attempts=0,
            manual_retry=False,
            waiting_for=delivery.waiting_for,
            event_id=delivery.event_id,
            event_type="users.updated",
            body="{}",
            subscription=sub,
            signing=None,  # recorded, never sent
        )
        async with self.db.write() as session:
            _, jobs = await record_attempts(
                session, [(attempt, outcome)], schedule=SCHEDULE, disable_after=3600
            )
        return jobs


def check_chains(rows: list[tuple[Delivery, str]]) -> None:
    """Per record, the waiting deliveries form one chain, oldest first: the oldest is due,
    every later one waits for the one just before it; nothing waits for an ended one."""
    waiting: dict[str, list[Delivery]] = {}
    for delivery, record in rows:
        if delivery.status in WAITING:
            waiting.setdefault(record, []).append(delivery)
    for chain in waiting.values():
        assert chain[0].waiting_for is None
        assert chain[0].next_attempt_at is not None
        for before, after in itertools.pairwise(chain):
            assert after.waiting_for == before.id
            assert after.next_attempt_at is None
    ended = {d.id for d, _ in rows if d.status not in WAITING}
    assert not {d.waiting_for for d, _ in rows} & ended
