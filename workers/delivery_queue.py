"""Running the deliver jobs of one queue, claimed and finished in bulk.

A queue is a sorted set of job ids scored by due time, the layout of an arq queue
(``relay.dispatch`` writes it; the id ``deliver:{delivery}:{attempt}[:manual]`` is the whole
job), and a claim is arq's too: the job's ``in-progress`` key, set NX with an expiry, so a
killed worker's jobs run again once their claims lapse. What is not arq's is running them.
arq's ``Worker`` spends, per job, a claim transaction (WATCH/EXISTS/ZSCORE/MULTI), a GET and
unpickling of the payload, a retry counter, a finishing transaction and two log lines;
measured with py-spy on ``bench/throughput.py``, that was over a third of a busy worker's CPU,
more than sending the webhooks. Here:

- one ``ZRANGEBYSCORE`` reads the due ids and one pipeline claims them (``SET NX PX`` each,
  then one ``ZMSCORE``: a job finished or deferred meanwhile is released, not run);
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
from workers.batching import Coalescer
from workers.context import WorkerContext, sleep_until
from workers.deliver import deliver

logger = logging.getLogger("relay.worker")

#: a claimed job whose task has not ended this long after its start (the delivery timeout
#: plus this) is abandoned to another worker, as arq does with its in-progress key
CLAIM_MARGIN = 10.0
READ_AHEAD = 5  # ids read per free slot: the head of the queue may be claimed by others
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
        now_ms = int(time.time() * 1000)
        raw: list[bytes] = await self.app.redis.zrangebyscore(
            self.queue_name, "-inf", now_ms, start=0, num=len(self.running) + free * READ_AHEAD
        )
        candidates = [i for i in (r.decode() for r in raw) if i not in self.running]
        started = 0
        # The head of the queue may be running in other workers: claim further down the
        # ids just read until this worker's free slots are used, instead of idling
        while candidates and started < free:
            chunk, candidates = (
                candidates[: free - started],
                candidates[free - started :],
            )
            for queued in await self._claim(chunk):
                task = asyncio.create_task(self._run(queued), name=queued.job_id)
                self.running[queued.job_id] = task
                task.add_done_callback(self._on_done)
                started += 1
        return started

    async def _claim(self, job_ids: Sequence[str]) -> list[QueuedAttempt]:
        async with self.app.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.set(in_progress_key_prefix + job_id, b"1", px=self.claim_ms, nx=True)
            # after the claims: a job that another worker finished just before is seen gone
            pipe.zmscore(self.queue_name, list(job_ids))
            *won, scores = await pipe.execute()
        now_ms = int(time.time() * 1000)
        claimed: list[QueuedAttempt] = []
        release: list[str] = []
        junk: list[str] = []
        for job_id, ours, score in zip(job_ids, won, scores, strict=True):
            if not ours:
                continue  # running in another worker
            if score is None or score > now_ms:
                release.append(job_id)  # finished meanwhile, or deferred: not ours to run
                continue
            queued = parse_job_id(job_id)
            if queued is None:
                junk.append(job_id)
            else:
                claimed.append(queued)
        if junk:
            logger.warning("dropping foreign ids from the delivery queue", extra={"ids": junk})
            await self._end_jobs([_Ending(job_id) for job_id in junk])
        if release:
            await self.app.redis.delete(*[in_progress_key_prefix + job_id for job_id in release])
        return claimed

    async def _run(self, queued: QueuedAttempt) -> None:
        ending = _Ending(queued.job_id)
        try:
            async with asyncio.timeout(self.job_timeout):
                await deliver(self.app, queued.delivery_id, queued.attempt)
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
