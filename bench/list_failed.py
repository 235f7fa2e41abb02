"""Benchmark: listing one subscription's failed deliveries at 1,000,000 rows (run it by hand).

    .venv/bin/python bench/list_failed.py [--rows 1000000] [--requests 200]
        [--server postgresql+asyncpg://postgres@127.0.0.1:5432/postgres] [--keep]

Creates a throwaway PostgreSQL database ``relay_bench_<random>`` on ``--server``, migrates it
(``alembic upgrade head``, so the indexes are the production ones), fills it with ``--rows``
deliveries across 50 subscriptions of 10 owners in one ``INSERT … SELECT generate_series``
(each event fans out to 5 subscriptions; ~90 % succeeded, 5 % failed, the rest retrying,
pending or cancelled; three subscriptions have a broken receiver and ~40 % failed), then runs
the API under uvicorn in a thread and times ``GET /v1/deliveries?subscription_id=…&status=failed``
with httpx (admin token, a service token, and walking pages by cursor), printing p50/p95/max
and PostgreSQL's EXPLAIN ANALYZE of the query the route runs. The database is dropped at the
end unless ``--keep``. Target: p95 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.dialects import postgresql  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from relay.api.app import create_app  # noqa: E402
from relay.cli.migrate import upgrade  # noqa: E402
from relay.db.crypto import generate_key  # noqa: E402
from relay.db.delivery_log import DeliveryFilters, delivery_query  # noqa: E402
from relay.secrets import RuntimeSecrets  # noqa: E402
from relay.settings import load_settings  # noqa: E402

ADMIN = "rat_bench-admin"
SUBSCRIPTIONS = 50
OWNERS = 10
BROKEN = (0, 1, 2)  # subscriptions whose receiver is down: ~40 % of their deliveries failed
TARGET = "sub_bench_07"  # a typical subscription (~5 % failed)

SUBSCRIPTIONS_SQL = """
INSERT INTO subscriptions (id, owner, url, record_types, actions, schools, districts, secret,
                           enabled, created_at, updated_at)
SELECT 'sub_bench_' || lpad(s::text, 2, '0'), 'svc-' || (s % :owners), 'http://127.0.0.1:9/h',
       '[]', '[]', '[]', '[]', 'whsec_x', true, now(), now()
FROM generate_series(0, :n - 1) s
"""

# g = 0..rows-1; event e = g / 5 fans out to subscriptions (7e + 11k) mod 50, k = g mod 5
# (distinct for k = 0..4, so (subscription_id, event_id) stays unique); ids grow with time.
DELIVERIES_SQL = """
INSERT INTO deliveries (subscription_id, event_id, event_type, status, attempts,
                        manual_attempts, manual_retry,
                        next_attempt_at, last_status_code, created_at, updated_at)
SELECT sub, event_id, event_type, status,
       CASE status WHEN 'succeeded' THEN 1 WHEN 'failed' THEN 8 WHEN 'retrying' THEN 3
                   ELSE 0 END,
       0, false,
       CASE WHEN status IN ('pending', 'retrying') THEN ts + interval '5 minutes' END,
       CASE status WHEN 'succeeded' THEN 204 WHEN 'failed' THEN 503 WHEN 'retrying' THEN 500
                   ELSE NULL END,
       ts, ts
FROM (
    SELECT sub, event_id, event_type, ts,
           CASE WHEN sub_no IN (0, 1, 2) AND r < 0.40 THEN 'failed'
                WHEN r < 0.90 THEN 'succeeded' WHEN r < 0.95 THEN 'failed'
                WHEN r < 0.98 THEN 'retrying' WHEN r < 0.995 THEN 'pending'
                ELSE 'cancelled' END AS status
    FROM (
        SELECT (((g / 5) * 7 + (g % 5) * 11) % :subs) AS sub_no,
               'sub_bench_' || lpad(((((g / 5) * 7 + (g % 5) * 11) % :subs))::text, 2, '0')
                   AS sub,
               lpad(to_hex(1714564800 + g / 5), 8, '0') || lpad(to_hex(g / 5), 16, '0')
                   AS event_id,
               (ARRAY['users.updated', 'users.created', 'sections.updated', 'users.deleted',
                      'sections.created', 'schools.updated', 'terms.updated'])[1 + (g / 5) % 7]
                   AS event_type,
               timestamptz '2024-05-01 12:00:00+00' + (g / 5) * interval '1 second' AS ts,
               random() AS r
        FROM generate_series(0, :rows - 1) g
    ) raw
) mixed
ORDER BY ts
"""


async def sql(url: str, *statements: tuple[str, dict[str, int]], autocommit: bool = False) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT" if autocommit else None)
    async with engine.begin() as conn:
        for statement, params in statements:
            await conn.execute(text(statement), params)
    await engine.dispose()


async def explain(url: str, query: str) -> str:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + query))).all()
    await engine.dispose()
    return "\n".join(str(r[0]) for r in rows)


def compiled(filters: DeliveryFilters) -> str:
    query = delivery_query(filters, 51)
    return str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def timed(label: str, n: int, call: Callable[[int], httpx.Response]) -> None:
    for i in range(10):  # warm the pool and caches
        call(i).raise_for_status()
    times: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        response = call(i)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    times.sort()
    p95 = times[int(0.95 * (len(times) - 1))]
    print(
        f"{label:<58} n={n:<4} p50={statistics.median(times):6.2f} ms  "
        f"p95={p95:6.2f} ms  max={times[-1]:6.2f} ms"
    )


def measure(url: str, requests: int) -> None:
    settings = load_settings(
        database_url=url, admin_token=ADMIN, secret_key="bench", _env_file=None
    )
    app = create_app(
        settings,
        RuntimeSecrets(admin_token=ADMIN, secret_key="bench", encryption_key=generate_key()),
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"})
        owner = f"svc-{int(TARGET[-2:]) % OWNERS}"
        token = admin.post("/v1/tokens", json={"owner": owner}).json()["token"]
        service = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
        failed = {"subscription_id": TARGET, "status": "failed"}
        broken = {"subscription_id": "sub_bench_01", "status": "failed"}
        cursors: list[str] = []
        page = admin.get("/v1/deliveries", params=failed | {"limit": 10}).json()
        while page["next_cursor"] and len(cursors) < requests:
            cursors.append(page["next_cursor"])
            page = admin.get(
                "/v1/deliveries", params=failed | {"limit": 10, "cursor": cursors[-1]}
            ).json()
        print(f"\n{TARGET}: {len(cursors) * 10 + len(page['data'])} failed deliveries\n")
        timed(
            "admin   subscription_id + status=failed (first page, 50)",
            requests,
            lambda _: admin.get("/v1/deliveries", params=failed),
        )
        timed(
            "service subscription_id + status=failed (ownership check)",
            requests,
            lambda _: service.get("/v1/deliveries", params=failed),
        )
        timed(
            "admin   same, walking pages by cursor (10 per page)",
            len(cursors),
            lambda i: admin.get(
                "/v1/deliveries", params=failed | {"limit": 10, "cursor": cursors[i % len(cursors)]}
            ),
        )
        timed(
            "admin   broken subscription (~40 % failed)",
            requests,
            lambda _: admin.get("/v1/deliveries", params=broken),
        )
        timed(
            "admin   status=failed across all subscriptions",
            requests,
            lambda _: admin.get("/v1/deliveries", params={"status": "failed"}),
        )
        timed(
            "service status=failed across its own subscriptions",
            requests,
            lambda _: service.get("/v1/deliveries", params={"status": "failed"}),
        )
        timed(
            "admin   no filter (newest 50)",
            requests,
            lambda _: admin.get("/v1/deliveries"),
        )
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def throwaway_database(server: str, keep: bool) -> Iterator[str]:
    """A fresh PostgreSQL database on ``server``, migrated to head; dropped after unless
    ``keep``. Yields its URL."""
    name = f"relay_bench_{secrets.token_hex(4)}"
    url = server.rsplit("/", 1)[0] + "/" + name
    asyncio.run(sql(server, (f'CREATE DATABASE "{name}"', {}), autocommit=True))
    print(f"database {name}")
    try:
        upgrade(url)
        yield url
    finally:
        if not keep:
            drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            asyncio.run(sql(server, (drop, {}), autocommit=True))
            print(f"\ndropped {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    args = parser.parse_args()
    with throwaway_database(args.server, args.keep) as url:
        start = time.perf_counter()
        params = {"owners": OWNERS, "n": SUBSCRIPTIONS, "subs": SUBSCRIPTIONS, "rows": args.rows}
        asyncio.run(
            sql(
                url,
                (SUBSCRIPTIONS_SQL, {"owners": OWNERS, "n": SUBSCRIPTIONS}),
                (DELIVERIES_SQL, {k: params[k] for k in ("subs", "rows")}),
            )
        )
        asyncio.run(sql(url, ("VACUUM ANALYZE deliveries", {}), autocommit=True))
        print(f"inserted {args.rows:,} deliveries in {time.perf_counter() - start:.1f} s")
        measure(url, args.requests)
        for label, filters in [
            ("one subscription's failed deliveries", DeliveryFilters(TARGET, ("failed",))),
            (
                "a service token's failed deliveries (no subscription_id)",
                DeliveryFilters(statuses=("failed",), owner="svc-7"),
            ),
        ]:
            print(f"\nEXPLAIN ANALYZE — {label}:\n{compiled(filters)}\n")
            print(asyncio.run(explain(url, compiled(filters))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
