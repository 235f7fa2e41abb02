"""A signing secret the worker's keys cannot decrypt is its subscription's problem only: the
jobs read in the same batch are sent, that subscription is disabled saying why (and its owner
told), its delivery parked, nothing sent unsigned (``relay.delivery.pipeline``)."""

from __future__ import annotations

import json

from sqlmodel import col, select

from relay.db import Database
from relay.db.models import Delivery, DeliveryAttempt, Event, Subscription
from relay.delivery.record import UNREADABLE_SECRET
from relay.queue import Job
from relay.settings import Settings
from tests.support.deliveries import add_deliveries, delivery
from tests.support.keys import store_under_other_key
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import add_subscription, worker_context, worker_settings


async def test_an_unreadable_secret_disables_its_subscription_and_spares_the_batch(
    db: Database, settings: Settings, redis_url: str
) -> None:
    receiver = Receiver()
    with serve(receiver.app()) as srv:
        good = await add_subscription(db, srv.url + "/good", owner="team")
        bad = await add_subscription(db, srv.url + "/bad", owner="team")
        told = await add_subscription(db, srv.url + "/ops", owner="team", record_types=["relay"])
        await store_under_other_key(db, "subscriptions", bad.id, "secret", bad.secret)
        ids = await add_deliveries(db, [good, bad], 2)  # good, bad, good, bad
        async with worker_context(worker_settings(settings, srv.url), redis_url) as app:
            # one batch, as a consumer claims them: the unreadable secret used to fail it all
            loaded = await app.pipeline.load([Job(i, 1) for i in ids])
            results = [await app.pipeline.run(attempt) for attempt in loaded]

    assert results == ["succeeded", "parked", "succeeded", "parked"]
    assert {r.path for r in receiver.received} == {"/good"}
    assert len(receiver.verified(good.secret)) == 2
    async with db.read() as session:
        row = await session.get(Subscription, bad.id)
        notices = (
            await session.exec(
                select(Event).where(col(Event.type) == "relay.subscription.disabled")
            )
        ).all()
        told_to = (
            await session.exec(
                select(Delivery.subscription_id).where(col(Delivery.event_id) == notices[0].id)
            )
        ).all()
        attempts = (
            await session.exec(
                select(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(ids[1::2]))
            )
        ).all()
    assert row is not None
    assert (row.enabled, row.disabled_reason) == (False, UNREADABLE_SECRET)
    assert "RELAY_ENCRYPTION_KEY" in UNREADABLE_SECRET
    # told once (the second job found it disabled already), to the owner's relay subscription
    assert len(notices) == 1
    body = json.loads(notices[0].body)["data"]["object"]
    assert (body["id"], body["enabled"], body["disabled_reason"]) == (
        bad.id,
        False,
        UNREADABLE_SECRET,
    )
    assert "secret" not in body
    assert told_to == [told.id]  # the owner's subscription to relay events (bad is disabled)
    assert attempts == []  # nothing was sent, so no attempt is on record
    for parked in ids[1::2]:
        row_, _ = await delivery(db, parked)
        assert (row_.status, row_.next_attempt_at) == ("pending", None)
