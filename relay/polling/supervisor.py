"""The poll supervisor: takes the leases of due districts and runs a poller for each, and
the lease keeper that renews them all together (``relay.polling.keeper``).

Polling is driven by database leases, not by the queue, so it keeps working while Redis is
down (the deliveries it stores wait in the database meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time

from relay.loops import supervise
from relay.polling import leases
from relay.polling.keeper import Lease, LeaseKeeper
from relay.polling.poller import DistrictPoller, PollingContext

logger = logging.getLogger("relay.poll")


class PollSupervisor:
    def __init__(self, app: PollingContext, *, restart_delay: float = 1.0) -> None:
        self.app = app
        self.restart_delay = restart_delay
        self.stop = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.keeper = LeaseKeeper(
            app.db.url,
            app.worker_id,
            app.settings.poll_lease,
            app.tuning.renew_every,
        )

    async def run(self) -> None:
        """Scan until stopped, then give the pollers up to a lease period to finish."""
        keeping = asyncio.create_task(
            supervise("poll leases", self.keeper.step, self.stop, restart_delay=self.restart_delay)
        )
        try:
            await supervise("poll", self.scan, self.stop, restart_delay=self.restart_delay)
            if self.tasks:
                await asyncio.wait(self.tasks.values(), timeout=self.app.settings.poll_lease)
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            await self.keeper.close()

    def _ended(self, lease: Lease, task: asyncio.Task[None]) -> None:
        self.keeper.drop(lease)

    async def scan(self) -> float:
        """Start a poller for each due district whose lease this worker could take; returns
        the pause before the next scan (jittered: workers scanning in lockstep would always
        hand a district released until a whole-second 429 reset to the same worker)."""
        for district_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[district_id]
        tuning = self.app.tuning
        for district_id in await leases.due_districts(self.app.db, tuning.scan_batch):
            if district_id in self.tasks:
                continue
            taken_at = time.monotonic()
            if await leases.acquire(
                self.app.db, district_id, self.app.worker_id, self.app.settings.poll_lease
            ):
                extra = {"district_id": district_id, "worker": self.app.worker_id}
                logger.info("poll lease taken", extra=extra)
                lease = self.keeper.hold(district_id, taken_at)
                poller = DistrictPoller(self.app, district_id, self.stop, lease)
                task = asyncio.create_task(poller.run(), name=f"poll:{district_id}")
                task.add_done_callback(functools.partial(self._ended, lease))
                self.tasks[district_id] = task
        return tuning.scan_every * random.uniform(0.5, 1.5)
