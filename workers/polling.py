"""Polling in a child process of the worker (``RELAY_POLL_PROCESS``, on by default).

Why a process and not a budget in one event loop: an idle poll costs CPU (an HTTP GET to
Clever, a read and a write in the database), and at a thousand districts every two seconds
that is hundreds of polls a second. In one event loop every one of them delays the delivery
jobs queued behind it on the same core: measured, a 6,000-delivery fan-out ran at ~290/s
with 400 districts polled against ~2,100/s alone. Capping polling's share of the loop would
only trade that for districts polled late. In a process of its own polling gets its own
core when there is one and its own scheduler share when there is not, and
``RELAY_POLL_NICE`` (default 10) lowers that share when the two contend for a core, so first
attempts come first; polling still runs (a nice process is never starved outright) and has
the machine to itself whenever delivery is idle.

The parent (``PollingProcess``) starts the child, restarts it if it dies, stops it with
SIGTERM (it finishes the poll in hand and releases its leases, as an in-process poller
does) and adds the child's counters (Clever requests, events ingested) to its own, so the
worker's ``/metrics`` still counts everything the worker did. The child polls under the
worker's id, so a restarted child takes its predecessor's leases back at once; it stops by
itself when the worker dies (``PR_SET_PDEATHSIG`` on Linux, and a parent check anywhere),
so a SIGKILLed worker's districts move within ``RELAY_POLL_LEASE`` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection

from prometheus_client import Counter

from relay import counters
from relay.loops import pause
from relay.polling.supervisor import PollSupervisor
from relay.queue import open_redis
from relay.settings import Settings
from workers.context import close_polling, open_polling

logger = logging.getLogger("relay.worker")

#: the counters polling increments, forwarded from the child to the worker's registry
FORWARDED: tuple[Counter, ...] = (counters.CLEVER_REQUESTS, counters.EVENTS_INGESTED)
#: seconds between the child's counter updates to the parent (only when something changed)
FORWARD_EVERY = 0.05
_PR_SET_PDEATHSIG = 1
_SPAWN = multiprocessing.get_context("spawn")  # fork is unsafe under threads and a loop

CounterKey = tuple[str, tuple[tuple[str, str], ...]]


def counter_totals() -> dict[CounterKey, float]:
    """This process's values of the forwarded counters, by (family, labels)."""
    totals: dict[CounterKey, float] = {}
    for metric in FORWARDED:
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[(family.name, tuple(sorted(sample.labels.items())))] = sample.value
    return totals


def add_counts(deltas: dict[CounterKey, float]) -> None:
    """Add a child's counts to this process's counters."""
    by_name = {family.name: metric for metric in FORWARDED for family in metric.collect()}
    for (name, labels), delta in deltas.items():
        metric = by_name.get(name)
        if metric is not None and delta > 0:
            (metric.labels(**dict(labels)) if labels else metric).inc(delta)


@dataclass(frozen=True)
class PollingJob:
    """What the child is given (pickled: ``relay run`` hands it settings of its own)."""

    settings: Settings
    redis_url: str
    worker_id: str
    parent_pid: int
    nice: int
    log_level: str


class PollingProcess:
    """The parent's side: the same ``run()`` and ``stop`` as an in-process ``PollSupervisor``."""

    def __init__(
        self, settings: Settings, redis_url: str, worker_id: str, *, restart_delay: float
    ) -> None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self.job = PollingJob(
            settings, redis_url, worker_id, os.getpid(), settings.poll_nice, str(level)
        )
        self.restart_delay = restart_delay
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Keep a polling child running until stopped; then stop it (up to a lease period
        for its pollers to finish, as in-process)."""
        while not self.stop.is_set():
            try:
                code = await self._run_child()
            except Exception:  # could not start one (out of processes, say): try again
                logger.exception("polling process failed; restarting it")
                code = None
            if self.stop.is_set():
                return
            logger.warning("polling process exited; restarting it", extra={"exit_code": code})
            if await pause(self.restart_delay, self.stop):
                return

    async def _run_child(self) -> int | None:
        loop = asyncio.get_running_loop()
        reader, writer = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=poll_in_child, args=(self.job, writer), name="relay-poller", daemon=True
        )
        process.start()
        writer.close()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(process.sentinel, on_exit)
        loop.add_reader(reader.fileno(), self._receive, reader)
        stopping = asyncio.create_task(self._stopped())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                process.terminate()
                grace = self.job.settings.poll_lease + 3  # the worker waits lease + 5
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), grace)
        finally:
            stopping.cancel()
            if process.is_alive():
                process.kill()
            loop.remove_reader(process.sentinel)
            process.join(5)
            self._receive(reader)  # the child's last counts
            loop.remove_reader(reader.fileno())
            reader.close()
        return process.exitcode

    async def _stopped(self) -> None:
        await self.stop.wait()

    @staticmethod
    def _receive(reader: Connection) -> None:
        """Add what the child sent; at its end of the pipe, stop listening."""
        try:
            while reader.poll():
                add_counts(reader.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(reader.fileno())


# -- in the child ---------------------------------------------------------------------------


def poll_in_child(job: PollingJob, writer: Connection) -> None:
    """The child's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent stops us
    _die_with_parent(job.parent_pid)
    from relay.logs import configure_logging

    configure_logging(job.log_level)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_poll(job, writer))
    else:
        uvloop.run(_poll(job, writer))


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM when the worker dies (Linux); elsewhere the forwarder's parent check."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


async def _poll(job: PollingJob, writer: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    settings = job.settings
    pool = await open_redis(job.redis_url)
    polling = await open_polling(settings, pool, job.worker_id)
    if job.nice:  # after start-up: a busy machine would slow the first polls too
        os.nice(job.nice)
    supervisor = PollSupervisor(polling, restart_delay=settings.tuning.restart_delay)
    polls = asyncio.create_task(supervisor.run(), name="poll-supervisor")
    polled = asyncio.Event()
    forwarding = asyncio.create_task(_forward(writer, job.parent_pid, stop, polled))
    logger.info("polling process started", extra={"worker": job.worker_id, "pid": os.getpid()})
    try:
        await stop.wait()
    finally:
        supervisor.stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(polls, settings.poll_lease + 5)
        polled.set()
        await forwarding
        await close_polling(polling)
        await pool.aclose()
        writer.close()


async def _forward(
    writer: Connection, parent_pid: int, stop: asyncio.Event, polled: asyncio.Event
) -> None:
    """Send the counters' growth to the parent until the pollers are done, and once more
    after; stop the child when the parent is gone."""
    sent: dict[CounterKey, float] = {}

    def send() -> None:
        totals = counter_totals()
        deltas = {k: v - sent.get(k, 0.0) for k, v in totals.items() if v != sent.get(k, 0.0)}
        if deltas:
            writer.send(deltas)
            sent.update(totals)

    while not polled.is_set():
        with contextlib.suppress(OSError):
            send()
        if os.getppid() != parent_pid:
            stop.set()
        await pause(FORWARD_EVERY, polled)
    with contextlib.suppress(OSError):
        send()
