"""An arq ``Worker`` that claims the jobs it reads in two pipelined round trips.

arq's ``start_jobs`` claims the jobs one at a time, each with WATCH, EXISTS, ZSCORE and
MULTI/EXEC: four sequential Redis round trips per job, in the single loop that feeds the
worker. Measured (``bench/throughput.py``), that loop, slowed further by the event loop being
busy with the running jobs, was what held a worker to ~100 deliveries/s with only ~8 of its
100 slots in use.

Here the whole batch read by one poll is claimed in one pipeline: for each job
``SET in-progress-key NX PX`` and then ``ZSCORE``. ``SET NX`` is the claim: of the workers
racing for a job exactly one sets the key, which is what arq's WATCH/MULTI guarantees too.
The ZSCORE runs after the claim, so a job that another worker finished just before it (gone
from the queue) or that was deferred meanwhile is seen as such, and its key is released
instead of the job being run. Jobs this worker is already running are skipped without a
round trip. Written against arq 0.28 (pinned in ``constraints.txt``).
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker


class BatchStartWorker(Worker):
    async def start_jobs(self, job_ids: list[bytes]) -> None:
        free = self.max_jobs - self.job_counter
        ids = [i.decode() for i in job_ids]
        ids = [i for i in ids if i not in self.tasks or self.tasks[i].done()][: max(free, 0)]
        if not ids:
            return
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        async with self.pool.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.set(in_progress_key_prefix + job_id, b"1", px=timeout_ms, nx=True)
                pipe.zscore(self.queue_name, job_id)
            replies = await pipe.execute()
        now = timestamp_ms()
        started: list[tuple[str, int]] = []
        release: list[str] = []
        for job_id, claimed, score in zip(ids, replies[::2], replies[1::2], strict=True):
            if not claimed:
                continue  # running in another worker
            if not score or score > now:
                release.append(job_id)  # finished meanwhile, or deferred: not ours to run
            else:
                started.append((job_id, int(score)))
        if release:
            await self.pool.delete(*[in_progress_key_prefix + job_id for job_id in release])
        for job_id, score in started:
            await self.sem.acquire()  # never waits: at most ``free`` jobs are started
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, score))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
