"""``relay simulate`` as the README's scaling path uses it: with no options it produces
events, and a ``relay worker`` given the environment it prints registers its districts and
stores them (issue 14, item 3). Real processes."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from sqlmodel import func, select

from relay.db import Database
from relay.db.models import District, Event
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN, ENCRYPTION_KEY
from tests.support.processes import relay_process
from tests.support.servers import free_port


def wait_for_text(process, needle: str, timeout: float = 30) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in (text := process.output()):
            return text
        assert process.proc.poll() is None, text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not seen:\n{process.output()}")


async def test_default_simulator_feeds_a_worker_set_up_as_it_says(
    db: Database, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    with relay_process(["simulate", "--port", str(port)], {}, tmp_path / "sim.log") as sim:
        banner = wait_for_text(sim, "CLEVER_CLIENT_SECRET=")
        assert "  1 new events/s per district" in banner
        exported = dict(re.findall(r"\b((?:RELAY|CLEVER)_[A-Z_]+)=(\S+)", banner))
        assert exported == {
            "RELAY_CLEVER_API_URL": f"http://127.0.0.1:{port}",
            "RELAY_CLEVER_OAUTH_URL": f"http://127.0.0.1:{port}",
            "CLEVER_CLIENT_ID": "sim-client-id",
            "CLEVER_CLIENT_SECRET": "sim-client-secret",
        }
        env = exported | {
            "RELAY_DATABASE_URL": settings.database_url,
            "RELAY_REDIS_URL": redis_url,
            "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "RELAY_SECRET_KEY": "test-secret-key",
            "RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
            "RELAY_DATA_DIR": str(tmp_path / "data"),
            "RELAY_POLL_INTERVAL": "0.5",
        }
        with relay_process(["worker"], env, tmp_path / "worker.log") as worker:
            deadline = time.monotonic() + 40
            stored = districts = 0
            while time.monotonic() < deadline and stored < 3:
                async with db.read() as session:
                    stored = (await session.exec(select(func.count()).select_from(Event))).one()
                    districts = len((await session.exec(select(District.id))).all())
                await asyncio.sleep(0.5)
            assert (districts, stored >= 3) == (2, True), worker.output()[-3000:]
