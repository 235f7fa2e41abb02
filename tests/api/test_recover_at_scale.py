"""Issue acceptance: "A recover over a window with 10,000 failed deliveries completes and every
one is delivered once the receiver is back."

10,000 events and their failed deliveries are bulk-inserted (SQLAlchemy core), the API (with
Redis, so it queues at once) and a worker run for real, and ``POST …/recover`` re-sends the
window; the test waits until all 10,000 have succeeded and the receiver holds 10,000 distinct
``webhook-id``s.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, text
from sqlmodel import SQLModel, col, select

from relay.api.app import create_app
from relay.db import Database
from relay.db.models import Delivery, Event, Subscription
from relay.delivery.signing import generate_secret
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.worker import running_worker, wait_for, worker_settings

N = 10_000
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
_CHUNK = 2_000
TABLES = SQLModel.metadata.tables


def _object_id(n: int, at: datetime) -> str:
    return f"{int(at.timestamp()):08x}{n:016x}"


async def seed_failed(db: Database, subscription_id: str, count: int) -> None:
    events: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    for n in range(count):
        created = T0 + timedelta(seconds=n)
        eid = _object_id(n, created)
        body = {
            "id": eid,
            "type": "users.updated",
            "created": created.isoformat().replace("+00:00", "Z"),
            "data": {"object": {"id": f"user{n}"}},
            "district": "d1",
        }
        events.append(
            {
                "id": eid,
                "district_id": "d1",
                "type": "users.updated",
                "record_id": f"user{n}",
                "created": created,
                "received_at": created,
                "body": json.dumps(body),
            }
        )
        deliveries.append(
            {
                "id": n + 1,
                "subscription_id": subscription_id,
                "event_id": eid,
                "event_type": "users.updated",
                "status": "failed",
                "attempts": 5,
                "manual_attempts": 0,
                "manual_retry": False,
                "next_attempt_at": None,
                "last_status_code": 503,
                "created_at": created,
                "updated_at": created,
            }
        )
        attempts.append(
            {
                "delivery_id": n + 1,
                "attempted_at": created + timedelta(hours=27),
                "status_code": 503,
                "duration_ms": 3,
                "error": None,
                "response_excerpt": "down",
                "trigger": "schedule",
            }
        )
    async with db.write() as session:
        conn = await session.connection()
        for table, rows in (
            (TABLES["events"], events),
            (TABLES["deliveries"], deliveries),
            (TABLES["delivery_attempts"], attempts),
        ):
            for start in range(0, len(rows), _CHUNK):
                await conn.execute(insert(table), rows[start : start + _CHUNK])
    if db.engine.dialect.name == "postgresql":  # explicit ids: move the sequences past them
        async with db.write() as session:
            conn = await session.connection()
            for name in ("deliveries", "delivery_attempts"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT MAX(id) FROM {name}))"
                    )
                )


async def count_status(db: Database, status: str) -> int:
    async with db.read() as session:
        return int(
            (
                await session.exec(
                    select(func.count()).select_from(Delivery).where(Delivery.status == status)
                )
            ).one()
        )


async def test_recover_10000_failed_deliveries_delivers_every_one(
    db: Database, settings: Settings, runtime: RuntimeSecrets, redis_url: str
) -> None:
    receiver = Receiver()
    with serve(receiver.app()) as hook:
        sub = Subscription(owner="svc", url=hook.url + "/hook", secret=generate_secret())
        async with db.write() as session:
            session.add(sub)
        started = time.monotonic()
        await seed_failed(db, sub.id, N)
        seeded = time.monotonic() - started
        assert await count_status(db, "failed") == N

        wsettings = worker_settings(settings, "http://127.0.0.1:9")  # no district: no polling
        with serve(create_app(wsettings, runtime, redis_url=redis_url)) as api:
            async with running_worker(wsettings, redis_url):
                headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                async with httpx.AsyncClient(base_url=api.url, headers=headers) as client:
                    t0 = time.monotonic()
                    response = await client.post(
                        f"/v1/subscriptions/{sub.id}/recover",
                        json={"since": (T0 - timedelta(minutes=1)).isoformat()},
                        timeout=60,
                    )
                    answered = time.monotonic() - t0
                    assert response.status_code == 202, response.text
                    assert response.json() == {"requeued": N}

                    async def all_succeeded() -> bool:
                        return await count_status(db, "succeeded") == N

                    try:
                        await wait_for(all_succeeded, timeout=240, interval=0.5)
                    except AssertionError:
                        raise AssertionError(
                            f"after {time.monotonic() - t0:.0f}s: "
                            f"{await count_status(db, 'succeeded')} succeeded, "
                            f"{len(set(receiver.event_ids()))} received"
                        ) from None
                    elapsed = time.monotonic() - t0

    ids = receiver.event_ids()
    async with db.read() as session:
        expected = set((await session.exec(select(Event.id))).all())
        left = (
            await session.exec(
                select(func.count()).select_from(Delivery).where(col(Delivery.manual_retry))
            )
        ).one()
    assert set(ids) == expected
    assert len(set(ids)) == N
    assert left == 0
    receiver.verified(sub.secret)  # every request is signed with the subscription's secret
    print(
        f"\nrecover of {N}: seeded in {seeded:.1f}s, 202 in {answered:.2f}s, all delivered in "
        f"{elapsed:.1f}s ({N / elapsed:.0f}/s), {len(ids)} requests "
        f"({len(ids) - len(set(ids))} duplicates)"
    )
