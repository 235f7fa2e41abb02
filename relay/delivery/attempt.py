"""The load step of the attempt pipeline: what a claimed job needs to know about its delivery.

The jobs claimed together are read in one query (plain rows rather than ORM objects, except
for the few subscriptions: a busy worker reads thousands of deliveries a second), instead of a
transaction per job.

Signing secrets are read as stored and decrypted only when the attempt is signed
(:class:`SigningSecrets`): a secret no configured key decrypts is its subscription's problem
(the pipeline disables it), where decrypting on load failed the whole batch, every other
subscription's jobs with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import select

from relay.db import Database, crypto
from relay.db.models import WAITING, Delivery, Event, Subscription
from relay.db.tables import one_of, table_of
from relay.delivery.signing import active_secrets
from relay.queue import Job


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """A subscription's signing secrets as stored (encrypted), decrypted only to sign."""

    secret: str
    previous: str | None
    previous_expires_at: datetime | None

    def active(self, now: datetime) -> list[str]:
        """The secrets that sign at ``now``, decrypted (the previous one only while its
        overlap lasts: an expired one is never decrypted). Raises SecretUnreadable if one
        does not decrypt with the process's keys."""
        ring = crypto.keyring()
        stored = active_secrets(self.secret, self.previous, self.previous_expires_at, now)
        return [ring.decrypt(value) for value in stored]


@dataclass(frozen=True, slots=True)
class Attempt:
    """Attempt ``job.attempt`` of a delivery, with the delivery as read before it is sent:
    its state, its event's body (None if the event is gone) and its subscription (None if
    deleted), read without its secrets, and those as stored (``signing``, None with the
    subscription). Recording it is a compare-and-set against ``attempts``."""

    job: Job
    status: str
    attempts: int
    manual_attempts: int
    manual_retry: bool
    waiting_for: int | None
    event_id: str
    event_type: str
    body: str | None
    subscription: Subscription | None
    signing: SigningSecrets | None

    @property
    def delivery_id(self) -> int:
        return self.job.delivery_id

    @property
    def number(self) -> int:
        """The attempt's number, manual ones included (1 = the first)."""
        return self.job.attempt

    @property
    def due(self) -> bool:
        """The database still waits for exactly this attempt, and not for another delivery
        first (else the job is a duplicate or stale: the reconciler, a crash or a Redis
        replay queued it again)."""
        return (
            self.status in WAITING
            and self.attempts == self.job.attempt - 1
            and self.waiting_for is None
        )


_deliveries, _events = table_of(Delivery), table_of(Event)
#: built once: a statement object reused keeps its cache key, where one built per batch is
#: traversed again each time to find its compiled form
_LOAD = (
    sa.select(
        _deliveries.c.id,
        _deliveries.c.status,
        _deliveries.c.attempts,
        _deliveries.c.manual_attempts,
        _deliveries.c.manual_retry,
        _deliveries.c.waiting_for,
        _deliveries.c.subscription_id,
        _deliveries.c.event_id,
        _deliveries.c.event_type,
        _events.c.body,
    )
    .select_from(_deliveries.outerjoin(_events, _events.c.id == _deliveries.c.event_id))
    .where(one_of(_deliveries.c.id, "ids"))
)
_subscriptions = table_of(Subscription)
# the ORM leaves the secrets out (relay.db.models); they are read beside it, as stored
_SUBSCRIPTIONS = select(
    Subscription,
    crypto.as_stored(_subscriptions.c.secret),
    crypto.as_stored(_subscriptions.c.previous_secret),
).where(one_of(_subscriptions.c.id, "ids", _subscriptions.c.id.type))


async def load_attempts(db: Database, jobs: Sequence[Job]) -> list[Attempt | None]:
    """Each job's attempt (None where the delivery is gone): two queries for the batch."""
    async with db.read() as session:
        conn = await session.connection()
        loaded = await conn.execute(_LOAD, {"ids": {job.delivery_id for job in jobs}})
        # plain tuples: a Row's attribute lookup by name, ten per delivery, was most of this
        rows = {int(row[0]): tuple(row) for row in loaded}
        wanted = {row[6] for row in rows.values()}
        subscriptions = {
            s.id: (s, SigningSecrets(secret, previous, s.previous_secret_expires_at))
            for s, secret, previous in (
                await session.exec(_SUBSCRIPTIONS, params={"ids": wanted})
            ).all()
        }
    attempts: list[Attempt | None] = []
    for job in jobs:
        row = rows.get(job.delivery_id)
        if row is None:
            attempts.append(None)
            continue
        _, status, n, manual, retry, waiting_for, sub_id, event_id, event_type, body = row
        subscription, signing = subscriptions.get(sub_id, (None, None))
        attempts.append(
            Attempt(
                job=job,
                status=status,
                attempts=n,
                manual_attempts=manual,
                manual_retry=bool(retry),
                waiting_for=waiting_for,
                event_id=event_id,
                event_type=event_type,
                body=body,
                subscription=subscription,
                signing=signing,
            )
        )
    return attempts
