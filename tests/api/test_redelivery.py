"""Retry and recover through the API, delivered by a real worker to a real receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from sqlmodel import col, select

from relay.api.app import create_app
from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, Event
from relay.queue import Job, RedisQueue
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import add_subscription, running_worker, wait_for, worker_settings

pytestmark = pytest.mark.usefixtures("redis_url")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str, list[int]]]:
    status = [500]  # what the receiver answers; tests flip it
    receiver = Receiver(responder=lambda n: (status[0], {}, 0.0))
    with serve(receiver.app()) as server:
        yield receiver, server.url + "/hook", status


@pytest.fixture
async def api(
    settings: Settings, runtime: RuntimeSecrets, redis_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    with serve(create_app(settings, runtime, redis_url=redis_url)) as server:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            yield client


async def seed_failed(db: Database, redis_url: str, subscription_id: str, count: int) -> list[int]:
    """``count`` deliveries queued for their first attempt."""
    now = utcnow()
    async with db.write() as session:
        deliveries = []
        for n in range(count):
            event_id = f"6b{n:022x}"
            body = f'{{"id":"{event_id}","type":"users.updated","data":{{"object":{{}}}}}}'
            session.add(Event(id=event_id, district_id="d1", type="users.updated", created=now,
                              body=body))  # fmt: skip
            delivery = Delivery(subscription_id=subscription_id, event_id=event_id,
                                event_type="users.updated", next_attempt_at=now)  # fmt: skip
            session.add(delivery)
            deliveries.append(delivery)
    ids = [d.id for d in deliveries if d.id is not None]
    redis = ArqRedis.from_url(redis_url)
    await RedisQueue(redis).enqueue([Job(i, 1, now) for i in ids])
    await redis.aclose()
    return ids


async def statuses(db: Database, ids: list[int]) -> set[str]:
    async with db.read() as session:
        rows = await session.exec(select(Delivery.status).where(col(Delivery.id).in_(ids)))
        return set(rows.all())


async def test_retry_sends_again_apart_from_the_schedule(
    db: Database,
    settings: Settings,
    redis_url: str,
    receiver: tuple[Receiver, str, list[int]],
    api: httpx.AsyncClient,
) -> None:
    _, url, status = receiver
    sub = await add_subscription(db, url)
    cfg = worker_settings(settings, "http://127.0.0.1:9", retry_schedule="0.1")  # 2 attempts
    async with running_worker(cfg, redis_url):
        [delivery_id] = await seed_failed(db, redis_url, sub.id, 1)
        await wait_for(lambda: _is(db, delivery_id, {"failed"}))

        # a manual retry that fails leaves the delivery failed: the schedule was used up
        response = await api.post(f"/v1/deliveries/{delivery_id}/retry")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "retrying"
        await wait_for(lambda: _attempts(db, delivery_id, 3))
        await wait_for(lambda: _is(db, delivery_id, {"failed"}))

        status[0] = 204
        assert (await api.post(f"/v1/deliveries/{delivery_id}/retry")).status_code == 202
        await wait_for(lambda: _is(db, delivery_id, {"succeeded"}))

    detail = (await api.get(f"/v1/deliveries/{delivery_id}")).json()
    assert [a["status_code"] for a in detail["attempts"]] == [500, 500, 500, 204]
    async with db.read() as session:
        row = await session.get(Delivery, delivery_id)
        triggers = (
            await session.exec(
                select(DeliveryAttempt.trigger).where(DeliveryAttempt.delivery_id == delivery_id)
            )
        ).all()
    assert row is not None
    assert (row.attempts, row.manual_attempts) == (4, 2)
    assert list(triggers) == ["schedule", "schedule", "manual", "manual"]


async def test_recover_resends_failed_deliveries_of_a_window(
    db: Database,
    settings: Settings,
    redis_url: str,
    receiver: tuple[Receiver, str, list[int]],
    api: httpx.AsyncClient,
) -> None:
    rcv, url, status = receiver
    sub = await add_subscription(db, url)
    cfg = worker_settings(settings, "http://127.0.0.1:9", retry_schedule="0.1")
    async with running_worker(cfg, redis_url):
        ids = await seed_failed(db, redis_url, sub.id, 30)
        await wait_for(lambda: _all(db, ids, {"failed"}))
        status[0] = 204
        since = (utcnow() - timedelta(hours=1)).isoformat()
        response = await api.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": since})
        assert response.status_code == 202, response.text
        assert response.json() == {"requeued": 30}
        await wait_for(lambda: _all(db, ids, {"succeeded"}))
    delivered = {r.headers["webhook-id"] for r in rcv.received if r.headers}
    assert len(delivered) == 30
    # a window that holds none of them recovers nothing
    later = (utcnow() + timedelta(hours=1)).isoformat()
    nothing = await api.post(f"/v1/subscriptions/{sub.id}/recover", json={"since": later})
    assert nothing.json() == {"requeued": 0}


async def test_redelivery_input_and_scoping(api: httpx.AsyncClient, db: Database) -> None:
    sub = await add_subscription(db, "http://127.0.0.1:9/x")
    bad = [
        {},
        {"since": "yesterday"},
        {"since": "2024-01-01T00:00:00"},  # no offset: ambiguous, refused
        {"since": "2024-01-01T00:00:00Z", "extra": 1},
    ]
    for body in bad:
        response = await api.post(f"/v1/subscriptions/{sub.id}/recover", json=body)
        assert response.status_code == 422, body
    assert (await api.post("/v1/deliveries/999/retry")).status_code == 404
    assert (await api.post("/v1/subscriptions/sub_nope/recover", json={})).status_code == 404
    token = (await api.post("/v1/tokens", json={"owner": "other"})).json()["token"]
    other = {"Authorization": f"Bearer {token}"}
    since = {"since": "2024-01-01T00:00:00Z"}
    response = await api.post(f"/v1/subscriptions/{sub.id}/recover", json=since, headers=other)
    assert response.status_code == 404
    await api.patch(f"/v1/subscriptions/{sub.id}", json={"enabled": False})
    response = await api.post(f"/v1/subscriptions/{sub.id}/recover", json=since)
    assert response.status_code == 409


async def _is(db: Database, delivery_id: int, wanted: set[str]) -> bool:
    return await statuses(db, [delivery_id]) <= wanted


async def _all(db: Database, ids: list[int], wanted: set[str]) -> bool:
    return await statuses(db, ids) == wanted


async def _attempts(db: Database, delivery_id: int, n: int) -> bool:
    async with db.read() as session:
        row = await session.get(Delivery, delivery_id)
    return row is not None and row.attempts >= n
