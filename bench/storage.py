"""Benchmark: what the database stores per event, delivery and attempt (run by hand).

    .venv/bin/python bench/storage.py [--db postgresql|sqlite] [--events 5000]
        [--subscriptions 5] [--rate 190] [--redis redis://127.0.0.1:6379/15]

Delivers ``--events`` events of one simulated district to ``--subscriptions`` subscriptions
(one attempt each: the receiver answers 204), then reads the size of every table with its
indexes (PostgreSQL: ``pg_total_relation_size``, after ``VACUUM ANALYZE``; SQLite: the
``dbstat`` table, or the file's size where SQLite was built without it) and prints bytes per
row, and what ``--rate`` deliveries a second would keep over ``RELAY_RETENTION_DAYS`` (30):
the retention purge deletes deliveries and attempts older than that, and events once no
delivery refers to them.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import DEFAULT_REDIS, ROOT, Stack, section, wait_for_deliveries
from relay.db import Database

TABLES = ("events", "deliveries", "delivery_attempts", "subscription_hours")


async def _pg_sizes(url: str) -> dict[str, tuple[int, int]]:
    """table → (rows, bytes with indexes and TOAST)."""
    engine = sa.ext.asyncio.create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("VACUUM ANALYZE"))
            sizes = {}
            for table in TABLES:
                rows = (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar()
                size = (
                    await conn.execute(sa.text(f"SELECT pg_total_relation_size('{table}')"))
                ).scalar()
                sizes[table] = (int(rows or 0), int(size or 0))
            return sizes
    finally:
        await engine.dispose()


def _sqlite_sizes(path: str) -> dict[str, tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        try:
            pages = dict(conn.execute("SELECT tbl_name, 0 FROM sqlite_schema WHERE type = 'table'"))
            for name, size in conn.execute(
                "SELECT s.tbl_name, SUM(d.pgsize) FROM dbstat d "
                "JOIN sqlite_schema s ON s.name = d.name GROUP BY s.tbl_name"
            ):
                pages[name] = size
        except sqlite3.OperationalError:  # no dbstat: only the whole file
            total = Path(path).stat().st_size
            return {"(whole file)": (rows["deliveries"], total)}
    return {t: (rows[t], int(pages.get(t, 0))) for t in TABLES}


async def _body_bytes(url: str) -> float:
    db = Database(url)
    try:
        async with db.read() as session:
            conn = await session.connection()
            avg = (await conn.execute(sa.text("SELECT avg(length(body)) FROM events"))).scalar()
            return float(avg or 0)
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--rate", type=float, default=190, help="deliveries/s to project")
    parser.add_argument("--days", type=float, default=30, help="RELAY_RETENTION_DAYS")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="flushed before the run")
    parser.add_argument("--code", type=Path, default=ROOT, help="relay tree to run (A/B)")
    args = parser.parse_args()
    expected = args.events * args.subscriptions
    with Stack(args.db, redis_url=args.redis, code=args.code) as stack:
        with section(f"setup: {args.db}, {args.events} events x {args.subscriptions} subs"):
            stack.create_database()
            stack.flush_redis()
            receiver = stack.start_receiver()
            _, district_id, token = stack.start_simulator(args.events)
            stack.seed(district_id, token, receiver + "/hook", args.subscriptions)
        with section("delivering"):
            stack.start_workers(1, {"RELAY_POLL_INTERVAL": "1"})
            wait_for_deliveries(stack, receiver, expected, timeout=600)
            stack.stop("worker-1")
        body = asyncio.run(_body_bytes(stack.database_url))
        if args.db == "postgresql":
            sizes = asyncio.run(_pg_sizes(stack.database_url))
        else:
            sizes = _sqlite_sizes(stack.database_url.split("///", 1)[1])

    print()
    print(f"database            {args.db}; event bodies average {body:.0f} bytes")
    total = 0
    for table, (rows, size) in sizes.items():
        total += size
        per = size / rows if rows else 0.0
        print(f"{table:20} {rows:8} rows {size / 1e6:8.2f} MB  {per:7.0f} bytes/row")
    per_delivery = total / expected
    kept = per_delivery * args.rate * 86400 * args.days
    print(f"per delivery        {per_delivery:7.0f} bytes, everything included")
    print(
        f"at {args.rate:g} deliveries/s  {per_delivery * args.rate * 60 / 1e6:.1f} MB a minute; "
        f"{kept / 1e9:.0f} GB kept over {args.days:g} days of retention"
    )


if __name__ == "__main__":
    main()
