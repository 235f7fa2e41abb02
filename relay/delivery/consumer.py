"""The consumer of one delivery queue: claims due jobs in bulk, runs each as its own task
through the attempt pipeline, and finishes them in bulk.

- one claim (``RedisQueue.claim``: one Lua script) takes a batch of due jobs, skipping those
  running in any worker, and one query loads their deliveries (``AttemptPipeline.load``);
- claims are taken in bulk: once the queue is busy, the loop waits for a tenth of its slots
  to free up rather than claiming one job per finished one;
- a claimed job that stepped aside before, and would again, is deferred at once, unread
  (``relay.delivery.aside``);
- each claimed job runs as its own task, so one slow receiver never holds up the others;
- jobs that end at about the same time are finished together (a ``Coalescer``: one pipeline
  of ``ZREM`` and ``DEL``); a job that steps aside for a busy subscription, fails or times
  out is put back with a later due time instead, so the queue never drops an attempt that
  is still due.

A job that outlives ``Timeouts.job`` is abandoned, and its claim lapses at
``Timeouts.claim_lapse``, so a killed worker's jobs run elsewhere by then. Running a job
twice sends at most one extra request and records one attempt (``relay.delivery.pipeline``).
One watchdog per consumer abandons the overdue jobs, looking every ``WATCH_EVERY`` seconds
(so a job ends up to that much late, well inside its claim's lapse): an ``asyncio.timeout``
per job was a timer made and cancelled per webhook, ~3 % of a busy worker's CPU (py-spy on
``bench/throughput.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from redis.exceptions import RedisError

from relay._exceptions import SubscriptionBusy
from relay.coalesce import Coalescer
from relay.delivery.attempt import Attempt
from relay.delivery.pipeline import AttemptPipeline
from relay.queue import Job, RedisQueue
from relay.tuning import DeliveryTuning, Timeouts

logger = logging.getLogger("relay.worker")

#: a job's end: its id, and None (done: it leaves the queue) or when it is due again
Ending = tuple[str, float | None]

#: how often the watchdog looks for jobs past their deadline (seconds)
WATCH_EVERY = 0.5


class DeliveryConsumer:
    """Consumes ``queue_name`` in one worker process, ``max_jobs`` jobs at a time."""

    def __init__(
        self,
        queue: RedisQueue,
        pipeline: AttemptPipeline,
        queue_name: str,
        *,
        max_jobs: int,
        timeouts: Timeouts,
        tuning: DeliveryTuning,
    ) -> None:
        self.queue = queue
        self.pipeline = pipeline
        self.queue_name = queue_name
        self.max_jobs = max_jobs
        self.timeouts = timeouts
        self.tuning = tuning
        self.running: dict[str, asyncio.Task[None]] = {}
        self._deadlines: dict[str, float] = {}  # job id → monotonic time it is abandoned at
        self._overdue: set[str] = set()  # cancelled by the watchdog, not by a shutdown
        self._watchdog: asyncio.Task[None] | None = None
        self._freed = asyncio.Event()  # set when at least _claim_at_least slots are free
        self._claim_at_least = max(1, max_jobs // 10)
        self._endings: Coalescer[Ending, None] = Coalescer(
            self._finish, max_batch=tuning.finish_batch
        )

    async def step(self, stop: asyncio.Event) -> float:
        """Claim and start due jobs; returns the pause before the next step (``relay.loops.
        supervise`` runs this until the worker stops)."""
        free = self.max_jobs - len(self.running)
        if free < self._claim_at_least:
            await self._wait_for_free_slots(stop)
            return 0.0
        jobs = await self.queue.claim(
            self.queue_name, free, lapse=self.timeouts.claim_lapse, scan=self.tuning.claim_scan
        )
        if not jobs:
            return self.tuning.idle_poll
        jobs = await self._step_aside(jobs)
        if not jobs:
            return 0.0
        try:
            attempts = await self.pipeline.load(jobs)
        except Exception:
            # the database is unreachable: the jobs go back to the queue for later
            logger.exception("could not read the claimed deliveries; they stay queued")
            await self._finish([self._deferred(job.id, self.tuning.error_retry) for job in jobs])
            return self.tuning.idle_poll
        deadline = time.monotonic() + self.timeouts.job
        loop = asyncio.get_running_loop()  # once: asyncio.create_task asks (getpid) per task
        for job, attempt in zip(jobs, attempts, strict=True):
            job_id = job.id  # a property that formats: once per job
            task = loop.create_task(self._run(job, job_id, attempt), name=job_id)
            self.running[job_id] = task
            self._deadlines[job_id] = deadline
            task.add_done_callback(self._on_done)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name=f"{self.queue_name}:watchdog")
        return 0.0

    async def _watch(self) -> None:
        """Cancel the jobs past their deadline (``_run`` tells that from a shutdown); ends
        once no job runs, and the next step starts it again. Deadlines are in the order the
        jobs started (one timeout for all), so it looks no further than the first one ahead."""
        while self.running:
            await asyncio.sleep(WATCH_EVERY)
            now = time.monotonic()
            while self._deadlines:
                job_id, deadline = next(iter(self._deadlines.items()))
                if deadline > now:
                    break
                del self._deadlines[job_id]
                task = self.running.get(job_id)
                if task is not None:
                    self._overdue.add(job_id)
                    task.cancel()

    async def _step_aside(self, jobs: list[Job]) -> list[Job]:
        """Defer, unread, the jobs the pipeline knows must step aside again; the rest."""
        ready: list[Job] = []
        aside: list[Ending] = []
        for job in jobs:
            wait = self.pipeline.step_aside(job)
            if wait is None:
                ready.append(job)
            else:
                aside.append(self._deferred(job.id, wait))
        if aside:
            with contextlib.suppress(RedisError, OSError):  # else their claims lapse
                await self._finish(aside)
        return ready

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for the running jobs (graceful shutdown)."""
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=within)

    async def _wait_for_free_slots(self, stop: asyncio.Event) -> None:
        self._freed.clear()
        waits = [asyncio.ensure_future(self._freed.wait()), asyncio.ensure_future(stop.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in pending:
            waiting.cancel()

    async def _run(self, job: Job, job_id: str, attempt: Attempt | None) -> None:
        ending: Ending = (job_id, None)
        extra = {"delivery_id": job.delivery_id, "attempt": job.attempt}
        try:
            await self.pipeline.run(attempt)
        except SubscriptionBusy as busy:
            ending = self._deferred(job_id, busy.defer)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job_id not in self._overdue or task is None or task.uncancel() > 0:
                raise  # a shutdown: the claim lapses and the job runs again
            # the attempt's recording is shielded and goes on; the job stays queued, and when
            # it runs again it finds the attempt recorded (or, if it never was, sends it)
            logger.warning("deliver job timed out", extra=extra)
            ending = self._deferred(job_id, self.tuning.error_retry)
        except Exception:
            # e.g. the database is down: the attempt is still due, so the job stays queued
            logger.exception("deliver job failed", extra=extra)
            ending = self._deferred(job_id, self.tuning.error_retry)
        self._deadlines.pop(job_id, None)  # past its attempt: the watchdog leaves it be
        with contextlib.suppress(RedisError, OSError):
            # if this is lost, the claim lapses and the job runs again: a no-op if its
            # attempt was recorded
            await self._endings.submit(ending)

    @staticmethod
    def _deferred(job_id: str, seconds: float) -> Ending:
        return job_id, time.time() + seconds

    def _on_done(self, task: asyncio.Task[None]) -> None:
        job_id = task.get_name()
        self.running.pop(job_id, None)
        self._deadlines.pop(job_id, None)
        self._overdue.discard(job_id)
        if self.max_jobs - len(self.running) >= self._claim_at_least:
            self._freed.set()

    async def _finish(self, endings: Sequence[Ending]) -> list[None]:
        done = [job_id for job_id, at in endings if at is None]
        deferred = {job_id: at for job_id, at in endings if at is not None}
        await self.queue.finish(self.queue_name, done=done, deferred=deferred)
        return [None] * len(endings)
