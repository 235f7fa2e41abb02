"""One attempt of one delivery, step by step: claim → load → send → record → outcome.

The consumer (``relay.delivery.consumer``) claims jobs from the queue and loads their
deliveries in one query (``relay.delivery.attempt``); for each, :meth:`AttemptPipeline.run`
checks that the database still waits for exactly that attempt, takes one of the
subscription's in-flight slots, signs and sends it (``signing``, ``sender``), and records it
(``record``, which applies ``outcome``) in a transaction shared with the jobs that finished
at about the same time; the next attempt, if any, is queued once that transaction committed.

Idempotent: a job does nothing unless the delivery is still waiting for exactly its attempt,
so a duplicate job (reconciler, crash, Redis replay) is a no-op, and a duplicate that raced
past the check cannot record twice either (the compare-and-set in ``record``). The receiver
may then see the same ``webhook-id`` twice, which is what at-least-once means and what the
id is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets as secrets_module
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import NoReturn

from sqlalchemy.exc import DBAPIError
from sqlmodel import col, update

from relay import counters
from relay._exceptions import SecretUnreadable, SubscriptionBusy, SubscriptionClosed
from relay.coalesce import Coalescer
from relay.db import Database, chains, utcnow
from relay.db.engine import refused
from relay.db.models import WAITING, Delivery, DeliveryStatus, Subscription
from relay.delivery.aside import Aside, Lines, busy_slots_wait, open_circuit_wait
from relay.delivery.attempt import Attempt, load_attempts
from relay.delivery.outcome import state_after
from relay.delivery.record import UNREADABLE_SECRET, Sent, disable_unreadable, record_attempts
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import AttemptOutcome, WebhookSender
from relay.delivery.signing import webhook_headers
from relay.delivery.slots import Slots
from relay.delivery.streaks import FailureStreaks
from relay.queue import Job, RedisQueue, next_attempts
from relay.queue.gates import Gates, Pass, Verdict
from relay.queue.gates import Request as GateRequest
from relay.tuning import DeliveryTuning

logger = logging.getLogger("relay.delivery")


class AttemptPipeline:
    """The delivery steps of one worker process, with what they share: the sender's
    connection pool, the per-subscription slots and the batched recording."""

    def __init__(
        self,
        db: Database,
        queue: RedisQueue,
        sender: WebhookSender,
        *,
        schedule: RetrySchedule,
        disable_after: float,
        tuning: DeliveryTuning,
        gates: Gates,
    ) -> None:
        self.db = db
        self.queue = queue
        self.sender = sender
        self.schedule = schedule
        self.disable_after = disable_after
        self.tuning = tuning
        self.gates = gates
        self.slots = Slots(tuning.slot_wait)  # per subscription: its max_in_flight
        self.owners = Slots(0)  # per owner: tuning.owner_in_flight, no waiting
        self.streaks = FailureStreaks(remind_every=tuning.failing_reminder_every)
        self.aside = Aside()  # jobs that stepped aside: deferred again without a read
        self.throttled = Lines()  # per subscription with a max_per_second
        # a hold's name among the subscription's holders in all workers: unique per process
        # by a counter, across processes by a random tag (a fresh token_hex per attempt was 2 %
        # of a busy worker's CPU, bench/throughput.py)
        self._holder = f"{secrets_module.token_hex(4)}:"
        self._holds = itertools.count()
        self._recorder: Coalescer[Sent, DeliveryStatus | None] = Coalescer(
            self._record_batch, max_batch=tuning.record_batch
        )

    def step_aside(self, job: Job) -> float | None:
        """Seconds to defer a claimed job by, before it is read, if it stepped aside before
        and its reason still holds here (its subscription's circuit is open, or its owner's
        share of this worker or its subscription's slots here are all taken); None: load and
        run it (``relay.delivery.aside``)."""
        seen = self.aside.get(job.delivery_id)
        if seen is None:
            return None
        wait = self.gates.open_for(seen.subscription_id)
        if wait is not None:
            return open_circuit_wait(wait)
        if self.owners.full(seen.owner):
            return self.aside.busy_owner_wait(seen)
        if self.slots.full(seen.subscription_id):
            return busy_slots_wait()
        return None

    async def load(self, jobs: Sequence[Job]) -> list[Attempt | None]:
        return await load_attempts(self.db, jobs)

    async def run(self, attempt: Attempt | None) -> str:
        """Send ``attempt`` if the database still waits for it, and record it; returns the
        delivery's status after it, or why nothing was sent. Raises SubscriptionBusy when it
        must step aside (its owner's share or its subscription's slots taken, its gate busy
        or throttled, its circuit open: the job goes back in the queue); the job is then
        remembered as having stepped aside, and forgotten once it ran any other way."""
        if attempt is None:
            return "gone"
        try:
            status = await self._run(attempt)
        except SubscriptionBusy:
            sub = attempt.subscription
            if sub is not None:
                self.aside.note(attempt.delivery_id, sub.id, sub.owner)
            raise
        except BaseException:
            self.aside.forget(attempt.delivery_id)
            raise
        self.aside.forget(attempt.delivery_id)
        return status

    async def _run(self, attempt: Attempt) -> str:
        if not attempt.due:
            return "stale"
        subscription = attempt.subscription
        if subscription is None or attempt.signing is None or attempt.body is None:
            await self._settle(attempt, DeliveryStatus.CANCELLED)
            return "cancelled"
        if not subscription.enabled:
            self.streaks.disabled(subscription.id, subscription.disabled_reason or "by hand")
            await self._settle(attempt, None)  # parked until the subscription is re-enabled
            return "parked"
        try:
            secrets = attempt.signing.active(utcnow())
        except SecretUnreadable:
            await self._unreadable(attempt, subscription)
            return "parked"
        try:
            outcome = await self._send(attempt, subscription, secrets, attempt.body.encode())
        except SubscriptionClosed:  # deleted or disabled since the job loaded it
            await self._settle(attempt, None)
            return "closed"
        # Shielded: the attempt was sent, so it must be recorded even if the job's timeout
        # (just above the delivery timeout) fires while the database is slow; a cancelled
        # recording would let the job run again and re-send, ignoring what the receiver said.
        status = await asyncio.shield(self.record(attempt, outcome))
        self._log(attempt, subscription, outcome, status)
        if status is not None:  # recorded by this run: counted in the streak once
            self.streaks.attempted(subscription.id, attempt.delivery_id, outcome)
        if status is None:  # another run recorded this attempt first: say what it meant
            status, _ = state_after(attempt, outcome, self.schedule, utcnow())
        return status.value

    def record(
        self, attempt: Attempt, outcome: AttemptOutcome
    ) -> asyncio.Future[DeliveryStatus | None]:
        """Record the attempt, with those that end at about the same time
        (``_record_batch``); done with its delivery's new status (None: a duplicate). A
        future, not a coroutine: shielding one costs no task."""
        return self._recorder.put((attempt, outcome))

    async def _unreadable(self, attempt: Attempt, subscription: Subscription) -> None:
        """A signing secret this worker's keys do not decrypt: the subscription is disabled
        saying why (``relay.subscription.disabled`` to its owner, by whichever attempt gets
        there first), and the delivery parked like every other of a disabled subscription,
        until the owner sets a new secret (or the workers get the key) and re-enables it.
        Nothing is sent: an unsigned or wrongly signed webhook would be worse than none."""
        async with self.db.write() as session:
            jobs = await disable_unreadable(session, subscription, utcnow())
        self.streaks.disabled(subscription.id, UNREADABLE_SECRET)
        await self._settle(attempt, None)
        await self.queue.enqueue(jobs)

    async def _send(
        self, attempt: Attempt, subscription: Subscription, secrets: list[str], body: bytes
    ) -> AttemptOutcome:
        wait = self.gates.open_for(subscription.id)
        if wait is not None:  # its endpoint keeps timing out: back later, unspent
            raise SubscriptionBusy(defer=open_circuit_wait(wait))
        async with self._turn(attempt, subscription) as heard:
            headers = webhook_headers(secrets, attempt.event_id, body)
            outcome = await self.sender.send(subscription.url, headers, body)
            heard.append(outcome.result != "timeout")
        return outcome

    @contextlib.asynccontextmanager
    async def _turn(
        self, attempt: Attempt, subscription: Subscription
    ) -> AsyncIterator[list[bool]]:
        """Hold the attempt's places while it is sent: one of its subscription's slots here
        (waiting for one in turn, up to ``slot_wait``), then one of its owner's share of this
        worker, and its pass through the subscription's gate shared by all workers
        (``relay.queue.gates``). Raises SubscriptionBusy (the job steps aside) or
        SubscriptionClosed. The caller appends whether the receiver answered (for the
        subscription's circuit) to the list it is given. Released once the receiver
        answered, not once the attempt is recorded: holding them through the shared write
        measured a third slower (bench/throughput.py).

        The owner's share counts attempts being sent, not jobs waiting for a slot: a wait
        ends within ``slot_wait``, a hanging attempt only at the delivery timeout. Counting
        the waiters too turned one owner's backlog to its five subscriptions into churn (40
        attempts in flight, 210 jobs waiting for their slots, every other job claimed and
        sent back 1-3 s later: 195,541 claims for 50,000 deliveries, bench/throughput.py)."""
        owner, sub_id = subscription.owner, subscription.id
        if not await self.slots.acquire(sub_id, subscription.max_in_flight):
            raise SubscriptionBusy(defer=busy_slots_wait())
        try:
            if not await self.owners.acquire(owner, self.tuning.owner_in_flight):
                # further back than a busy subscription, and further each time: the owner's
                # other jobs are queued too
                seen = self.aside.note(attempt.delivery_id, sub_id, owner)
                raise SubscriptionBusy(defer=self.aside.busy_owner_wait(seen))
            try:
                async with self._gate(attempt, subscription) as heard:
                    yield heard
            finally:
                self.owners.release(owner)
        finally:
            self.slots.release(sub_id)

    @contextlib.asynccontextmanager
    async def _gate(
        self, attempt: Attempt, subscription: Subscription
    ) -> AsyncIterator[list[bool]]:
        request = GateRequest(
            subscription.id,
            f"{attempt.delivery_id}:{attempt.number}:{self._holder}{next(self._holds)}",
            subscription.max_in_flight,
            subscription.max_per_second,
        )
        verdict = await self.gates.enter(request)
        if verdict.kind is not Pass.GRANTED:
            self._turned_away(request, verdict)
        heard: list[bool] = []
        try:
            yield heard
        finally:
            # not awaited: the next attempt to this subscription, here, asks for its pass
            # after this leave, in the same round trip when one is in flight (both wait for
            # the next), else in the one after
            self.gates.leave(request, heard[0] if heard else None)

    def _turned_away(self, request: GateRequest, verdict: Verdict) -> NoReturn:
        if verdict.kind is Pass.CLOSED:
            raise SubscriptionClosed
        if verdict.kind is Pass.OPEN:  # its endpoint keeps timing out: back later, unspent
            raise SubscriptionBusy(defer=open_circuit_wait(verdict.wait))
        if verdict.kind is Pass.BUSY:  # its max_in_flight is reached across the workers
            raise SubscriptionBusy(defer=random.uniform(0.05, 0.25))
        # THROTTLED: this second's max_per_second is spent; back in line
        spacing = 1 / (request.max_per_second or 1)
        wait = self.throttled.place(request.subscription_id, spacing)
        raise SubscriptionBusy(defer=max(wait, 0.05))

    async def _record_batch(self, sent: Sequence[Sent]) -> list[DeliveryStatus | None]:
        """The attempts of concurrent jobs in one write transaction; then their next
        attempts in one enqueue (after the commit: a queued job always finds its row).

        If the database refuses what an attempt brought back (a value it cannot hold), it is
        recorded again without the receiver's reply, saying so: an attempt that cannot be
        recorded would be sent again and again, unseen. A batch refused as a whole is tried
        item by item (``Coalescer``), and so finds the one. A database that is away
        (connection errors) is not that: the job runs again later."""
        try:
            return await self._record_all(sent)
        except DBAPIError as exc:
            if len(sent) != 1 or not refused(exc):
                raise
            [(attempt, outcome)] = sent
            why = f"(not stored: the database refused it, {type(exc.orig).__name__})"
            logger.error(
                "delivery attempt recorded without the receiver's reply",
                extra={"delivery_id": attempt.delivery_id, "error": type(exc.orig).__name__},
            )
            bare = replace(
                outcome, response_excerpt=why, error=None if outcome.error is None else why
            )
            return await self._record_all([(attempt, bare)])

    async def _record_all(self, sent: Sequence[Sent]) -> list[DeliveryStatus | None]:
        async with self.db.write() as session:
            statuses, next_jobs = await record_attempts(
                session, sent, schedule=self.schedule, disable_after=self.disable_after
            )
        for (_, outcome), status in zip(sent, statuses, strict=True):
            if status is not None:  # counted once, by the process whose attempt was recorded
                counters.count_attempt(outcome.result, outcome.duration_ms)
        await self.queue.enqueue(next_jobs)
        return statuses

    async def _settle(self, attempt: Attempt, status: DeliveryStatus | None) -> None:
        """Cancel a delivery (``status``; the one waiting for it is released) or park it
        (None: no next attempt until its subscription is re-enabled)."""
        now = utcnow()
        values: dict[str, object] = {"next_attempt_at": None, "updated_at": now}
        if status is not None:
            values["status"] = status
        async with self.db.write() as session:
            result = await session.exec(
                update(Delivery)
                .where(col(Delivery.id) == attempt.delivery_id)
                .where(col(Delivery.status).in_(WAITING))
                .values(**values)
            )
            released: list[chains.Released] = []
            if status is not None and result.rowcount:
                released = await chains.release(
                    await session.connection(), [attempt.delivery_id], now
                )
        await self.queue.enqueue(next_attempts(released, now))

    @staticmethod
    def _log(
        attempt: Attempt,
        subscription: Subscription,
        outcome: AttemptOutcome,
        status: DeliveryStatus | None,
    ) -> None:
        # every attempt is a DEBUG line (it is in the database and the API anyway): at INFO,
        # one JSON line per webhook was a measurable share of a busy worker's CPU, and one
        # warning per failed attempt buried everything else; failures are told once per
        # streak by self.streaks
        logger.debug(
            "delivery attempt",
            extra={
                "delivery_id": attempt.delivery_id,
                "event_id": attempt.event_id,
                "subscription_id": subscription.id,
                "attempt": attempt.number,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "duration_ms": outcome.duration_ms,
                "result": "duplicate" if status is None else status.value,
            },
        )
