"""What every job in a worker process shares, built once at start-up."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from relay.clever.client import CleverClient
from relay.clever.ratelimit import TokenPacer
from relay.db import Database
from relay.delivery.outcomes import AttemptRecord, Recorded
from relay.delivery.schedule import RetrySchedule
from relay.delivery.sender import WebhookSender
from relay.delivery.targets import TargetPolicy
from relay.dispatch import Dispatcher
from relay.settings import Settings
from workers.batching import Coalescer, record_batch

# In-flight attempts per subscription in one worker process: a slow or hanging endpoint can
# hold at most this many of the worker's slots; its other jobs wait up to SLOT_WAIT seconds
# for a slot (a healthy endpoint frees one within milliseconds), then step aside (back in
# the queue ~1 s later: SubscriptionBusy).
PER_SUBSCRIPTION_CONCURRENCY = 8
SLOT_WAIT = 0.5


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    redis: ArqRedis
    dispatcher: Dispatcher
    sender: WebhookSender
    clever: CleverClient
    schedule: RetrySchedule
    worker_id: str = field(default_factory=worker_id)
    slots: defaultdict[str, asyncio.Semaphore] = field(
        default_factory=lambda: defaultdict(lambda: asyncio.Semaphore(PER_SUBSCRIPTION_CONCURRENCY))
    )
    # the deliver jobs' writes, shared by the jobs that finish at about the same time
    records: Coalescer[AttemptRecord, Recorded] = field(init=False)

    def __post_init__(self) -> None:
        self.records = Coalescer(
            functools.partial(record_batch, self.db, self.schedule, self.settings.disable_after)
        )

    @classmethod
    async def open(cls, settings: Settings, redis: ArqRedis) -> WorkerContext:
        sender = WebhookSender(
            timeout=settings.delivery_timeout,
            policy=TargetPolicy.from_env_value(settings.allowed_targets),
        )
        await sender.__aenter__()
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            redis=redis,
            dispatcher=Dispatcher(redis),
            sender=sender,
            clever=CleverClient(settings.clever_api_url, pacer=TokenPacer()),
            schedule=settings.schedule,
        )

    async def close(self) -> None:
        await self.sender.aclose()
        await self.clever.aclose()
        await self.db.dispose()


def context_of(ctx: dict[str, Any]) -> WorkerContext:
    value = ctx["relay"]
    assert isinstance(value, WorkerContext)
    return value


async def sleep_until(deadline: float, stop: asyncio.Event) -> bool:
    """Sleep until ``deadline`` (loop time) or ``stop``; True if stopped."""
    timeout = deadline - asyncio.get_running_loop().time()
    if timeout <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except TimeoutError:
        return False
    return True
