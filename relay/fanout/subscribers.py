"""Fan-out: which subscriptions an event goes to. Runs inside the ingest transaction, so an
event is never stored without its deliveries (the transactional outbox)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from relay.db.models import Subscription
from relay.fanout.matching import Facts, Filter


@dataclass(frozen=True, slots=True)
class Subscriber:
    subscription_id: str
    filter: Filter
    ordered: bool = False


async def load_subscribers(session: AsyncSession) -> list[Subscriber]:
    """Enabled subscriptions: a disabled one receives nothing until it is re-enabled."""
    rows = await session.exec(select(Subscription).where(col(Subscription.enabled).is_(True)))
    return [subscriber(s) for s in rows]


def subscriber(s: Subscription) -> Subscriber:
    return Subscriber(
        s.id,
        Filter(
            record_types=frozenset(s.record_types),
            actions=frozenset(s.actions),
            districts=frozenset(s.districts),
            schools=frozenset(s.schools),
            roles=frozenset(s.roles),
            changed=Filter.changed_paths(s.changed),
        ),
        s.ordered,
    )


def subscribers_of(facts: Facts, subscribers: Sequence[Subscriber]) -> Iterable[Subscriber]:
    """The subscribers that want the event of ``facts`` (``Facts.of``: computed once for all
    of them, and before the page's write transaction)."""
    for subscriber in subscribers:
        if subscriber.filter.matches_facts(facts):
            yield subscriber
