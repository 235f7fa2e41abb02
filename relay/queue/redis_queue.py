"""The delivery queues in Redis: the only module that knows their key names.

Each delivery queue is one sorted set of job ids scored by due time (ms), the layout of an arq
queue, and a claim is arq's too: the job's ``in-progress`` key, set NX with an expiry, so a
killed worker's jobs run again once their claims lapse. A batch of attempts is one ``ZADD NX``
per queue, where arq's ``enqueue_job`` is a transaction per job plus a pickled payload (a page
of 1,000 events fanned out to five subscriptions is 5,000 jobs); a batch of claims is one Lua
script (``CLAIM_SCRIPT``) and a batch of endings one pipeline. arq's ``Worker`` spent, per job,
a claim transaction, a GET and unpickling of the payload, a retry counter, a finishing
transaction and two log lines: over a third of a busy worker's CPU (py-spy on
``bench/throughput.py``), more than sending the webhooks.

Redis is only a dispatch buffer (``docs/architecture.md``): enqueueing never raises for a
Redis failure, because the rows are in the database and the reconciler queues them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

import hiredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from relay.queue.jobs import DELIVERY_QUEUES, Job

logger = logging.getLogger("relay.queue")

#: where the reconciler keeps what its previous pass covered; lost with the rest of Redis,
#: which is how the reconciler notices a loss (``relay.queue.reconcile``)
WATERMARK_KEY = "relay:reconciled"

# Claims in one round trip, atomically: going through the due ids (score <= ARGV[1]) in order,
# 500 at a time and at most ARGV[4] of them, the first ARGV[3] whose in-progress key
# (ARGV[5] .. id) this call could set (NX, expiring after ARGV[2] ms); ids running anywhere, in
# this worker or another, already have theirs and are passed over.
CLAIM_SCRIPT = """
local wanted, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local claimed, offset = {}, 0
while #claimed < wanted and offset < budget do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, 500)
  if #due == 0 then break end
  for _, id in ipairs(due) do
    if #claimed >= wanted then break end
    if redis.call('SET', ARGV[5] .. id, '1', 'NX', 'PX', ARGV[2]) then
      claimed[#claimed + 1] = id
    end
  end
  offset = offset + #due
end
return claimed
"""


def redis_settings(url: str) -> RedisSettings:
    """A client that rides out a Redis restart: commands retry with backoff, connecting
    retries for a minute."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 60
    settings.conn_timeout = 2
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=20)
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    return settings


async def open_redis(url: str) -> ArqRedis:
    """A client on ``url`` (``redis_settings``: connecting retries for a minute) whose
    connections pack commands in C."""
    client = await create_pool(redis_settings(url))
    await client.connection_pool.disconnect()  # the one made for its ping, of the class before
    client.connection_pool.reset()  # type: ignore[no-untyped-call]
    return _packing_in_c(client)


def redis_client(url: str) -> ArqRedis:
    """A client on ``url`` that connects when first used, packing commands in C."""
    return _packing_in_c(ArqRedis.from_url(url))


def _packing_in_c(client: ArqRedis) -> ArqRedis:
    pool = client.connection_pool
    pool.connection_class = _packing_class(pool.connection_class)
    return client


class _PackingInC(AbstractConnection):
    """Commands packed by hiredis. redis-py 5's asyncio client packs them in Python, joining
    its buffer again for every argument: the gate script of a round of attempts, a page's
    ZADD of 5,000 jobs and the reconciler's were 4-5 % of a busy worker's CPU and of the
    polling process's (py-spy, bench/throughput.py). Its sync client already does this;
    arq keeps redis below 6."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        # as redis-py does: a command name of several words ("CLIENT SETNAME") is sent as
        # several arguments
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]  # type: ignore[arg-type]
        except TypeError:  # an int subclass hiredis refuses, or None: redis-py's own way
            return super().pack_command(*args)

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        return [b"".join(self.pack_command(*command)[0] for command in commands)]


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _packing_class(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (plain, TLS or Unix socket, as the URL says) packing its commands in C."""
    if cls not in _PACKING:
        _PACKING[cls] = type(cls.__name__, (_PackingInC, cls), {})
    return _PACKING[cls]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisQueue:
    """Enqueue, claim and finish delivery jobs; one per process, shared by its users."""

    def __init__(self, redis: ArqRedis, *, enqueue_batch: int = 2000) -> None:
        self.redis = redis
        self._enqueue_batch = enqueue_batch
        self._claim_script = redis.register_script(CLAIM_SCRIPT)

    async def enqueue(self, jobs: Sequence[Job]) -> int:
        """Queue each job unless it is already queued; returns how many were new.

        Never raises for a Redis failure: the rows are in the database and the reconciler
        will queue them once Redis is back.
        """
        added = 0
        try:
            for start in range(0, len(jobs), self._enqueue_batch):
                added += await self._enqueue(jobs[start : start + self._enqueue_batch])
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not queue deliveries; the reconciler will retry",
                extra={"error": f"{type(exc).__name__}: {exc}", "count": len(jobs)},
            )
        return added

    async def _enqueue(self, jobs: Sequence[Job]) -> int:
        now_ms = _ms(time.time())
        by_queue: dict[str, dict[str, int]] = {}
        for job in jobs:
            due_ms = now_ms if job.due_at is None else max(now_ms, _ms(job.due_at.timestamp()))
            by_queue.setdefault(job.queue, {})[job.id] = due_ms
        added = 0
        for queue, scored in by_queue.items():
            # NX: an attempt already queued (or running: a job leaves the queue when it ends)
            # keeps its place and its due time
            added += int(await self.redis.zadd(queue, scored, nx=True))
        return added

    async def claim(self, queue: str, count: int, *, lapse: float, scan: int) -> list[Job]:
        """Claim up to ``count`` due jobs of ``queue``, in due order, skipping those running
        anywhere (looking through ``scan`` due ids at most); each claim lapses after
        ``lapse`` seconds unless the job is finished first. Ids this relay did not write
        are dropped from the queue."""
        replies = await self._claim_script(
            keys=[queue],
            args=[_ms(time.time()), _ms(lapse), count, scan, in_progress_key_prefix],
        )
        claimed: list[Job] = []
        junk: list[str] = []
        for raw in replies:
            job_id = raw.decode()
            job = Job.parse(job_id)
            if job is None:
                junk.append(job_id)
            else:
                claimed.append(job)
        if junk:
            logger.warning("dropping foreign ids from the delivery queue", extra={"ids": junk})
            await self.finish(queue, done=junk)
        return claimed

    async def finish(
        self,
        queue: str,
        *,
        done: Iterable[str] = (),
        deferred: Mapping[str, float] | None = None,
    ) -> None:
        """End claimed jobs: ``done`` ids leave the queue, ``deferred`` ones (id → unix time)
        stay in it with a later due time; either way their claims are released."""
        done, deferred = list(done), deferred or {}
        if not done and not deferred:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if done:
                pipe.zrem(queue, *done)
            if deferred:
                pipe.zadd(queue, {i: _ms(at) for i, at in deferred.items()}, xx=True)
            pipe.delete(*[in_progress_key_prefix + i for i in [*done, *deferred]])
            await pipe.execute()

    async def depth(self) -> dict[str, tuple[int, int]]:
        """Per delivery queue, (jobs queued, jobs of them due now)."""
        now = _ms(time.time())
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue in DELIVERY_QUEUES:
                pipe.zcard(queue)
                pipe.zcount(queue, "-inf", now)
            replies = await pipe.execute()
        return {
            queue: (int(replies[2 * i]), int(replies[2 * i + 1]))
            for i, queue in enumerate(DELIVERY_QUEUES)
        }

    async def read_watermark(self) -> bytes | None:
        value = await self.redis.get(WATERMARK_KEY)
        return value if isinstance(value, bytes) else None

    async def write_watermark(self, value: bytes, *, only_if_present: bool = False) -> None:
        """``only_if_present``: a flush since the pass began deleted it, and it must stay
        deleted, so that the next pass is a full one too."""
        await self.redis.set(WATERMARK_KEY, value, xx=only_if_present)
