"""``relay worker`` polls in a child process (``RELAY_POLL_PROCESS``, the default): polling
does not share the event loop of first attempts. Real worker processes, a real simulator,
database and Redis."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlmodel import select

from relay.clever.simulator import Simulator
from relay.db import Database
from relay.db.models import District
from relay.settings import Settings
from tests.support.cluster import FAST
from tests.support.config import ENCRYPTION_KEY
from tests.support.processes import RelayProcess, alive, process_env, spawned_children
from tests.support.servers import ServerThread
from tests.support.worker import add_district, wait_for


def polls(sim: Simulator, district_id: str) -> int:
    return sum(1 for r in list(sim.requests) if r["district"] == district_id)


@contextmanager
def polling_worker(
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> Iterator[RelayProcess]:
    env = process_env(settings.database_url, redis_url, simulator[1].url, tmp_path / "data")
    env |= FAST | {"RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY}
    worker = RelayProcess(["worker"], env, tmp_path / "worker.log")
    try:
        yield worker
    finally:
        if alive(worker.proc.pid):
            os.kill(worker.proc.pid, signal.SIGCONT)
        worker.stop()


async def polled(sim: Simulator, district_id: str, more_than: int) -> None:
    """Until the simulator saw more than ``more_than`` polls of the district (a worker
    starting on a busy machine takes a while)."""

    async def enough() -> bool:
        return polls(sim, district_id) > more_than

    await wait_for(enough, 90)


async def child_of(worker: RelayProcess) -> int:
    async def one() -> bool:
        return len(spawned_children(worker.proc.pid)) == 1

    await wait_for(one, 60)
    return spawned_children(worker.proc.pid)[0]


async def test_polling_goes_on_while_the_worker_process_is_stopped(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim = simulator[0]
    district = next(iter(sim.districts.values()))
    await add_district(db, district.id, district.token)
    with polling_worker(settings, redis_url, simulator, tmp_path) as worker:
        await polled(sim, district.id, 2)
        os.kill(worker.proc.pid, signal.SIGSTOP)  # the delivery side: its event loop frozen
        try:
            await polled(sim, district.id, polls(sim, district.id) + 3)
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        assert worker.stop() == 0, worker.output()
    assert "Traceback" not in worker.output(), worker.output()


async def test_a_killed_worker_takes_its_polling_process_and_leases_with_it(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim = simulator[0]
    district = next(iter(sim.districts.values()))
    await add_district(db, district.id, district.token)
    with polling_worker(settings, redis_url, simulator, tmp_path) as worker:
        await polled(sim, district.id, 2)
        child = await child_of(worker)
        worker.kill()

        async def released() -> bool:
            async with db.read() as session:
                row = (await session.exec(select(District).where(District.id == district.id))).one()
            return not alive(child) and row.lease_owner is None

        # the orphan stops at once (SIGTERM from the kernel) and lets its lease go, rather
        # than polling on under a dead worker's name
        await wait_for(released, 30)


async def test_a_polling_process_that_dies_is_replaced(
    db: Database,
    settings: Settings,
    redis_url: str,
    simulator: tuple[Simulator, ServerThread],
    tmp_path: Path,
) -> None:
    sim = simulator[0]
    district = next(iter(sim.districts.values()))
    await add_district(db, district.id, district.token)
    with polling_worker(settings, redis_url, simulator, tmp_path) as worker:
        await polled(sim, district.id, 2)
        first = await child_of(worker)
        os.kill(first, signal.SIGKILL)

        async def replaced() -> bool:
            return spawned_children(worker.proc.pid) not in ([], [first])

        await wait_for(replaced, 30)
        # the new child takes the lease its predecessor held under the worker's id at once
        await polled(sim, district.id, polls(sim, district.id) + 3)
        assert worker.stop() == 0, worker.output()
    assert "polling process exited; restarting it" in worker.output()
