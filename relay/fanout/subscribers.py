"""Fan-out: which subscriptions an event goes to. Runs inside the ingest transaction, so an
event is never stored without its deliveries (the transactional outbox).

Fan-out reads only what matching needs: never a subscription's secret, so a secret no
configured key decrypts cannot stop a page from being stored (it used to stop every district's
intake at once)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db.models import Subscription
from relay.db.tables import table_of
from relay.fanout.matching import Facts, Filter


@dataclass(frozen=True, slots=True)
class Subscriber:
    subscription_id: str
    filter: Filter
    ordered: bool = False


_subscriptions = table_of(Subscription)
#: built once; the columns matching needs, and nothing encrypted
_ENABLED = sa.select(
    _subscriptions.c.id,
    _subscriptions.c.record_types,
    _subscriptions.c.actions,
    _subscriptions.c.districts,
    _subscriptions.c.schools,
    _subscriptions.c.roles,
    _subscriptions.c.changed,
    _subscriptions.c.ordered,
).where(_subscriptions.c.enabled.is_(True))


async def load_subscribers(session: AsyncSession) -> list[Subscriber]:
    """Enabled subscriptions: a disabled one receives nothing until it is re-enabled."""
    conn = await session.connection()
    return [
        Subscriber(
            sub_id,
            _filter(record_types, actions, districts, schools, roles, changed),
            bool(ordered),
        )
        for sub_id, record_types, actions, districts, schools, roles, changed, ordered in (
            await conn.execute(_ENABLED)
        )
    ]


def subscriber(s: Subscription) -> Subscriber:
    return Subscriber(
        s.id,
        _filter(s.record_types, s.actions, s.districts, s.schools, s.roles, s.changed),
        s.ordered,
    )


def _filter(
    record_types: Iterable[str],
    actions: Iterable[str],
    districts: Iterable[str],
    schools: Iterable[str],
    roles: Iterable[str],
    changed: Iterable[str],
) -> Filter:
    return Filter(
        record_types=frozenset(record_types),
        actions=frozenset(actions),
        districts=frozenset(districts),
        schools=frozenset(schools),
        roles=frozenset(roles),
        changed=Filter.changed_paths(changed),
    )


def subscribers_of(facts: Facts, subscribers: Sequence[Subscriber]) -> Iterable[Subscriber]:
    """The subscribers that want the event of ``facts`` (``Facts.of``: computed once for all
    of them, and before the page's write transaction)."""
    for subscriber in subscribers:
        if subscriber.filter.matches_facts(facts):
            yield subscriber
