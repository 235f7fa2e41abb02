"""What every job and loop in a worker process shares, built once at start-up."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from relay.clever.client import CleverClient
from relay.clever.ratelimit import TokenPacer
from relay.db import Database, crypto
from relay.delivery.pipeline import AttemptPipeline
from relay.delivery.sender import WebhookSender
from relay.polling.poller import PollingContext
from relay.queue import RedisQueue
from relay.queue.gates import Breaker, Gates
from relay.secrets import resolve_keyring
from relay.settings import Settings
from relay.tuning import Tuning


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def breaker(settings: Settings) -> Breaker:
    tuning = settings.tuning.delivery
    return Breaker(
        after=tuning.circuit_after,
        span=2 * settings.delivery_timeout,
        cooldown=tuning.circuit_cooldown,
        longest=tuning.circuit_longest,
        probes=tuning.circuit_probes,
    )


@dataclass
class WorkerContext:
    settings: Settings
    tuning: Tuning
    db: Database
    redis: ArqRedis
    queue: RedisQueue
    sender: WebhookSender
    clever: CleverClient
    pipeline: AttemptPipeline
    worker_id: str = field(default_factory=worker_id)

    @classmethod
    async def open(cls, settings: Settings, redis: ArqRedis) -> WorkerContext:
        tuning = settings.tuning
        crypto.use(resolve_keyring(settings))
        db = Database(settings.database_url)
        # a worker without the key another process writes with says so at start-up (and
        # still starts: what it cannot read is those rows' problem)
        await crypto.check_keys(db.engine, "worker")
        queue = RedisQueue(redis, enqueue_batch=tuning.enqueue_batch)
        sender = WebhookSender(
            timeout=settings.delivery_timeout,
            policy=settings.target_policy,
        )
        await sender.__aenter__()
        pipeline = AttemptPipeline(
            db,
            queue,
            sender,
            schedule=settings.schedule,
            disable_after=settings.disable_after,
            tuning=tuning.delivery,
            gates=Gates(redis, lease=tuning.timeouts.job, breaker=breaker(settings)),
        )
        clever = CleverClient(settings.clever_api_url, pacer=TokenPacer())
        return cls(settings, tuning, db, redis, queue, sender, clever, pipeline)

    @property
    def polling(self) -> PollingContext:
        return PollingContext(
            self.settings, self.db, self.clever, self.queue, self.worker_id, self.tuning.polling
        )

    async def close(self) -> None:
        await self.sender.aclose()
        await self.clever.aclose()
        await self.db.dispose()


async def open_polling(settings: Settings, redis: ArqRedis, worker_id: str) -> PollingContext:
    """What a polling process needs, and no more: no webhook sender, no delivery pipeline
    (``workers.polling`` runs the pollers in a child process of the worker)."""
    crypto.use(resolve_keyring(settings))
    tuning = settings.tuning
    return PollingContext(
        settings,
        Database(settings.database_url),
        CleverClient(settings.clever_api_url, pacer=TokenPacer()),
        RedisQueue(redis, enqueue_batch=tuning.enqueue_batch),
        worker_id,
        tuning.polling,
    )


async def close_polling(polling: PollingContext) -> None:
    await polling.clever.aclose()
    await polling.db.dispose()


def context_of(ctx: dict[str, Any]) -> WorkerContext:
    """The worker's context in an arq job's ``ctx``."""
    value = ctx["relay"]
    assert isinstance(value, WorkerContext)
    return value
