"""Benchmark: a ``/metrics`` scrape and ``GET /v1/subscriptions/{id}/stats`` at 1,000,000
deliveries (run it by hand).

    .venv/bin/python bench/observability.py [--rows 1000000] [--requests 200]
        [--server postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
        [--redis redis://127.0.0.1:6379/15] [--keep]

Creates a throwaway PostgreSQL database, migrates it, and fills it like
``bench/list_failed.py`` (``--rows`` deliveries across 50 subscriptions, ~6.5 % failed and
~3.5 % waiting), plus 1,000 districts and, per subscription, a month of hourly statistics rows
(720 each: what the stats endpoint reads, kept for the retention period). Then it runs the API
under uvicorn in a thread, with the scrape cache off (every scrape queries the database and
Redis), and times ``GET /metrics`` and the stats endpoint for each window with httpx, printing
p50/p95/max and EXPLAIN ANALYZE of the scrape's largest count. Target: p95 < 50 ms for both.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from list_failed import (  # noqa: E402
    ADMIN,
    DELIVERIES_SQL,
    OWNERS,
    SUBSCRIPTIONS,
    SUBSCRIPTIONS_SQL,
    TARGET,
    explain,
    sql,
    throwaway_database,
    timed,
)

from relay.api import metrics  # noqa: E402
from relay.api.app import create_app  # noqa: E402
from relay.db.crypto import generate_key  # noqa: E402
from relay.secrets import RuntimeSecrets  # noqa: E402
from relay.settings import load_settings  # noqa: E402

DISTRICTS_SQL = """
INSERT INTO districts (id, token, token_source, start_from, status, cursor, seeded,
                       last_polled_at, caught_up, consecutive_failures, created_at, updated_at)
SELECT 'district_' || d, 'token', 'manual', 'latest',
       CASE WHEN d % 100 = 0 THEN 'error' ELSE 'active' END,
       lpad(to_hex(1714564800 + d), 8, '0') || lpad(to_hex(d), 16, '0'), true,
       now() - (d % 5) * interval '1 second', true, 0, now(), now()
FROM generate_series(1, :n) d
"""

# a month of hours per subscription, ~100 attempts an hour, durations mostly 25-250 ms
HOURS_SQL = """
INSERT INTO subscription_hours (subscription_id, hour, attempts, succeeded, failed,
    deliveries_failed, duration_ms, le_5, le_10, le_25, le_50, le_100, le_250, le_500, le_1000,
    le_2500, le_5000, le_15000, le_inf, last_success_at, last_failure_at)
SELECT s.id, date_trunc('hour', now()) - h * interval '1 hour', 100, 95, 5, 1, 8000,
       0, 2, 10, 30, 30, 20, 5, 2, 1, 0, 0, 0,
       date_trunc('hour', now()) - h * interval '1 hour' + interval '59 minutes',
       date_trunc('hour', now()) - h * interval '1 hour' + interval '58 minutes'
FROM subscriptions s, generate_series(0, 719) h
"""

FAILED_COUNT = "SELECT count(*) FROM deliveries WHERE status = 'failed'"


def measure(url: str, redis_url: str, requests: int) -> None:
    metrics.CACHE_SECONDS = 0.0  # every scrape pays for its queries
    settings = load_settings(
        database_url=url, admin_token=ADMIN, secret_key="bench", _env_file=None
    )
    runtime = RuntimeSecrets(admin_token=ADMIN, secret_key="bench", encryption_key=generate_key())
    app = create_app(settings, runtime, redis_url=redis_url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"})
        scrape = admin.get("/metrics").text
        lines = [line for line in scrape.splitlines() if line and not line.startswith("#")]
        print(f"\n/metrics: {len(lines)} samples, {len(scrape):,} bytes")
        for name in ("relay_deliveries_failed", "relay_deliveries_waiting", "relay_queue_jobs"):
            print("  " + next(line for line in lines if line.startswith(name)))
        print(f"stats of {TARGET}: {admin.get(f'/v1/subscriptions/{TARGET}/stats').json()}\n")
        timed("GET /metrics (uncached)", requests, lambda _: admin.get("/metrics"))
        for window in ("1h", "24h", "7d"):
            timed(
                f"GET /v1/subscriptions/{{id}}/stats?window={window}",
                requests,
                lambda _, w=window: admin.get(  # type: ignore[misc]
                    f"/v1/subscriptions/{TARGET}/stats", params={"window": w}
                ),
            )
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    args = parser.parse_args()
    with throwaway_database(args.server, args.keep) as url:
        start = time.perf_counter()
        asyncio.run(
            sql(
                url,
                (SUBSCRIPTIONS_SQL, {"owners": OWNERS, "n": SUBSCRIPTIONS}),
                (DELIVERIES_SQL, {"subs": SUBSCRIPTIONS, "rows": args.rows}),
                (DISTRICTS_SQL, {"n": 1000}),
                (HOURS_SQL, {}),
            )
        )
        asyncio.run(sql(url, ("VACUUM ANALYZE", {}), autocommit=True))
        print(f"inserted {args.rows:,} deliveries in {time.perf_counter() - start:.1f} s")
        measure(url, args.redis, args.requests)
        print(f"\nEXPLAIN ANALYZE — {FAILED_COUNT}:")
        print(asyncio.run(explain(url, FAILED_COUNT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
