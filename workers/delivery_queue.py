"""Running the deliver jobs of one queue, claimed and finished in bulk.

A queue is a sorted set of job ids scored by due time, the layout of an arq queue
(``relay.dispatch`` writes it; the id ``deliver:{delivery}:{attempt}[:manual]`` is the whole
job), and a claim is arq's too: the job's ``in-progress`` key, set NX with an expiry, so a
killed worker's jobs run again once their claims lapse. What is not arq's is running them.
arq's ``Worker`` spends, per job, a claim transaction (WATCH/EXISTS/ZSCORE/MULTI), a GET and
unpickling of the payload, a retry counter, a finishing transaction and two log lines;
measured with py-spy on ``bench/throughput.py``, that was over a third of a busy worker's CPU,
more than sending the webhooks. Here:

- one Lua script claims a batch of due jobs, atomically (``CLAIM_SCRIPT``: the due ids in
  order, ``SET NX PX`` of each claim, skipping those running anywhere), and one query reads
  the claimed deliveries;
- claims are taken in bulk: once the queue is busy, the loop waits for a tenth of its
  slots to free up rather than claiming one job per finished one;
- each claimed job runs as its own task (one slow receiver never holds up the others);
- jobs that end at about the same time are finished together (``Coalescer``): one ``ZREM`` of
  their ids and one ``DEL`` of their claims; a job that steps aside for a busy subscription,
  fails or times out is put back with a later score instead, so the queue never drops an
  attempt that is still due.

Idempotency is the database's (see ``workers.deliver``): running a job twice sends at most
one extra request and records one attempt. A job lost with Redis is queued again by the
reconciler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from arq.constants import in_progress_key_prefix
from redis.exceptions import RedisError

from relay._exceptions import SubscriptionBusy
from relay.dispatch import DELIVER_FUNCTION
from workers.batching import Coalescer, DeliveryRow, load_deliveries
from workers.context import WorkerContext, sleep_until
from workers.deliver import deliver

logger = logging.getLogger("relay.worker")

#: a claimed job whose task has not ended this long after its start (the delivery timeout
#: plus this) is abandoned to another worker, as arq does with its in-progress key
CLAIM_MARGIN = 10.0
CLAIM_SCAN = 5000  # due ids one claim looks through at most (those ahead may be running)

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
RETRY_AFTER_ERROR = 5.0  # seconds before a job that failed or timed out runs again


@dataclass(frozen=True, slots=True)
class QueuedAttempt:
    job_id: str
    delivery_id: int
    attempt: int


def parse_job_id(job_id: str) -> QueuedAttempt | None:
    """``deliver:{delivery}:{attempt}[:manual]`` (``relay.dispatch.job_id``); None if not."""
    parts = job_id.split(":")
    if len(parts) not in (3, 4) or parts[0] != DELIVER_FUNCTION:
        return None
    if len(parts) == 4 and parts[3] != "manual":
        return None
    try:
        return QueuedAttempt(job_id, int(parts[1]), int(parts[2]))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Ending:
    job_id: str
    defer_until_ms: int | None = None  # None: done, remove it; else: back in the queue then


class DeliveryQueue:
    """The consumer of one delivery queue in one worker process (``run`` until stopped)."""

    def __init__(
        self,
        app: WorkerContext,
        queue_name: str,
        *,
        max_jobs: int,
        job_timeout: float,
        poll_delay: float = 0.05,
    ) -> None:
        self.app = app
        self.queue_name = queue_name
        self.max_jobs = max_jobs
        self.job_timeout = job_timeout
        self.poll_delay = poll_delay
        self.running: dict[str, asyncio.Task[None]] = {}
        self._freed = asyncio.Event()  # set when at least _claim_at_least slots are free
        self._claim_at_least = max(1, max_jobs // 10)
        self._claim_script = app.redis.register_script(CLAIM_SCRIPT)
        self._endings: Coalescer[_Ending, None] = Coalescer(self._end_jobs, max_batch=1000)

    @property
    def claim_ms(self) -> int:
        return int((self.job_timeout + CLAIM_MARGIN) * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and start due jobs until ``stop``; Redis failures are waited out."""
        while not stop.is_set():
            try:
                started = await self._start_due_jobs(stop)
            except (RedisError, OSError) as exc:
                logger.warning(
                    "lost Redis; the delivery queue reconnects",
                    extra={"queue": self.queue_name, "error": f"{type(exc).__name__}: {exc}"},
                )
                await sleep_until(asyncio.get_running_loop().time() + 1.0, stop)
                continue
            if started == 0:
                await sleep_until(asyncio.get_running_loop().time() + self.poll_delay, stop)

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for the running jobs (graceful shutdown)."""
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=within)

    async def _start_due_jobs(self, stop: asyncio.Event) -> int:
        free = self.max_jobs - len(self.running)
        if free < self._claim_at_least:
            self._freed.clear()
            waits = [asyncio.ensure_future(self._freed.wait()), asyncio.ensure_future(stop.wait())]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiting in pending:
                waiting.cancel()
            return -1  # not idle: look again at once
        claimed = await self._claim(free)
        if not claimed:
            return 0
        try:
            rows = await load_deliveries(self.app.db, [q.delivery_id for q in claimed])
        except Exception:
            # the database is unreachable: the jobs go back to the queue for later
            logger.exception("could not read the claimed deliveries; they stay queued")
            await self._end_jobs([self._deferred(q, RETRY_AFTER_ERROR) for q in claimed])
            return 0
        for queued, row in zip(claimed, rows, strict=True):
            task = asyncio.create_task(self._run(queued, row), name=queued.job_id)
            self.running[queued.job_id] = task
            task.add_done_callback(self._on_done)
        return len(claimed)

    async def _claim(self, count: int) -> list[QueuedAttempt]:
        """Claim up to ``count`` due jobs, in due order, skipping those running anywhere."""
        replies = await self._claim_script(
            keys=[self.queue_name],
            args=[
                int(time.time() * 1000),
                self.claim_ms,
                count,
                CLAIM_SCAN,
                in_progress_key_prefix,
            ],
        )
        claimed: list[QueuedAttempt] = []
        junk: list[str] = []
        for raw in replies:
            job_id = raw.decode()
            queued = parse_job_id(job_id)
            if queued is None:
                junk.append(job_id)
            else:
                claimed.append(queued)
        if junk:
            logger.warning("dropping foreign ids from the delivery queue", extra={"ids": junk})
            await self._end_jobs([_Ending(job_id) for job_id in junk])
        return claimed

    async def _run(self, queued: QueuedAttempt, row: DeliveryRow | None) -> None:
        ending = _Ending(queued.job_id)
        try:
            async with asyncio.timeout(self.job_timeout):
                await deliver(self.app, queued.delivery_id, queued.attempt, row)
        except SubscriptionBusy as busy:
            ending = self._deferred(queued, busy.defer)
        except TimeoutError:
            # the attempt's recording is shielded and goes on; the job stays queued, and when
            # it runs again it finds the attempt recorded (or, if it never was, sends it)
            logger.warning(
                "deliver job timed out",
                extra={"delivery_id": queued.delivery_id, "attempt": queued.attempt},
            )
            ending = self._deferred(queued, RETRY_AFTER_ERROR)
        except Exception:
            # e.g. the database is down: the attempt is still due, so the job stays queued
            logger.exception(
                "deliver job failed",
                extra={"delivery_id": queued.delivery_id, "attempt": queued.attempt},
            )
            ending = self._deferred(queued, RETRY_AFTER_ERROR)
        with contextlib.suppress(RedisError, OSError):
            # if this is lost, the claim lapses and the job runs again: a no-op if its attempt
            # was recorded
            await self._endings.submit(ending)

    @staticmethod
    def _deferred(queued: QueuedAttempt, seconds: float) -> _Ending:
        return _Ending(queued.job_id, int((time.time() + seconds) * 1000))

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task.get_name(), None)
        if self.max_jobs - len(self.running) >= self._claim_at_least:
            self._freed.set()

    async def _end_jobs(self, endings: Sequence[_Ending]) -> list[None]:
        done = [e.job_id for e in endings if e.defer_until_ms is None]
        deferred = {e.job_id: e.defer_until_ms for e in endings if e.defer_until_ms is not None}
        async with self.app.redis.pipeline(transaction=False) as pipe:
            if done:
                pipe.zrem(self.queue_name, *done)
            if deferred:
                pipe.zadd(self.queue_name, deferred, xx=True)
            pipe.delete(*[in_progress_key_prefix + e.job_id for e in endings])
            await pipe.execute()
        return [None] * len(endings)
