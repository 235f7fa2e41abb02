"""The relay's internal knobs, in one place (as httpx keeps its in ``Timeout`` and ``Limits``).

``relay.settings`` holds what an operator sets through the environment; this module holds the
numbers the code needs that nobody should have to set: batch sizes, concurrency, margins and
pauses, each with the reason for its value. Values derived from others (the job timeout, the
claim lapse) are derived here once, so no module adds its own margin to a timeout.

Every long-running part takes the object it needs (``Tuning.polling``, ``Tuning.delivery``,
...) from ``Settings.tuning``; tests build their own with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from relay.clever.backoff import Backoff


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long one delivery may take, and what follows from it."""

    #: seconds per webhook attempt (``RELAY_DELIVERY_TIMEOUT``)
    delivery: float = 15.0
    #: a deliver job outlives its attempt by this much before it is abandoned
    job_margin: float = 5.0
    #: and its claim in Redis lapses this much after that, so a SIGKILLed worker's in-flight
    #: jobs run elsewhere ``claim_lapse`` seconds after they were taken
    claim_margin: float = 10.0

    @property
    def job(self) -> float:
        return self.delivery + self.job_margin

    @property
    def claim_lapse(self) -> float:
        return self.job + self.claim_margin


@dataclass(frozen=True, slots=True)
class PollingTuning:
    """The poll supervisor and the district pollers (``relay.polling``)."""

    #: seconds between scans for due districts, jittered ±50 % so that workers scanning in
    #: lockstep do not always hand a district released until a 429's reset to the same worker
    scan_every: float = 0.5
    #: due districts one scan reads at most
    scan_batch: int = 200
    #: seconds between renewals of all the leases a worker holds (one transaction for all of
    #: them, with the quiet polls' ``last_polled_at``: at most this much behind); at most a
    #: third of ``RELAY_POLL_LEASE``. An operator's pause or new token reaches the poller at
    #: the next renewal
    renew_every: float = 5.0
    #: failed polls in a row before a district shows ``status: error``
    error_after_failures: int = 5
    #: 401s in a row, whose token Clever still lists, before a district is ``unauthorized``
    unauthorized_after_401s: int = 3
    #: between failed polls of one district
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    #: a caught-up district's "events stored" line sums this many seconds of polls (a burst
    #: that paged through a backlog is summed and logged when it ends)
    stored_summary_every: float = 60.0


@dataclass(frozen=True, slots=True)
class DeliveryTuning:
    """The delivery consumers and the attempt pipeline (``relay.delivery``)."""

    #: a subscription failing all along is reminded of in the log at most this often (seconds;
    #: its first failure and the end of its streak are logged at once)
    failing_reminder_every: float = 3600.0
    #: a job waits this long for one of its subscription's slots (a healthy endpoint frees one
    #: within milliseconds), then steps aside and goes back in the queue ~1 s later
    slot_wait: float = 0.5
    #: attempts in flight per owner in one worker: one team's hanging endpoints hold at most
    #: this many of the worker's jobs, the rest stepping aside, so other teams keep theirs
    owner_in_flight: int = 250
    #: a subscription's circuit opens after this many timeouts with no answer between them,
    #: in any worker, spread over at least two delivery timeouts (timeouts together are one
    #: stall) ...
    circuit_after: int = 3
    #: ... and its jobs step aside for this long; then this many probes go (more measured
    #: worse: 250 hanging endpoints' probes alone filled their owner's share of the worker,
    #: bench/neighbours.py), and a probe that times out doubles it, up to circuit_longest
    #: (relay.queue.gates)
    circuit_cooldown: float = 10.0
    circuit_probes: int = 1
    circuit_longest: float = 300.0
    #: jobs in progress per worker on the first-attempts queue. Most of a job's life is spent
    #: waiting for a shared query or transaction, so more jobs make bigger batches rather
    #: than more load: 100 → 600 measured +50 % deliveries/s (bench/throughput.py)
    first_attempt_jobs: int = 600
    #: and on the retries queue, which has slots of its own so that retries piling up for a
    #: dead endpoint never delay first attempts elsewhere
    retry_jobs: int = 50
    #: due ids one claim looks through at most (those ahead may be running elsewhere)
    claim_scan: int = 5000
    #: pause of an idle consumer before it looks at its queue again
    idle_poll: float = 0.05
    #: a job that failed (database down) or timed out runs again this much later
    error_retry: float = 5.0
    #: attempts recorded in one transaction at most; job endings finished in one pipeline
    record_batch: int = 200
    finish_batch: int = 1000
    #: a replay hands its events to the queue this many at a time, one transaction each,
    replay_batch: int = 500
    #: and only while its subscription has fewer than this many deliveries waiting to be
    #: sent, so that it never fills the queue ahead of other subscriptions' first attempts
    replay_backlog: int = 500
    #: pause of the replay loop when there is nothing (or, for now, no room) to replay
    replay_idle: float = 0.5


@dataclass(frozen=True, slots=True)
class ReconcileTuning:
    """The reconciler (``relay.queue.reconcile``)."""

    #: due deliveries read per query
    batch: int = 2000
    #: rows due this recently are left to the ingest path's own enqueue
    grace: timedelta = timedelta(seconds=2)
    #: longer than a transaction that makes deliveries due: each pass re-reads this much of
    #: the window the previous pass covered, for transactions that committed late
    margin: timedelta = timedelta(seconds=5)
    #: a backstop against anything unforeseen: a full pass at least this often (seconds)
    full_scan_every: float = 300.0


@dataclass(frozen=True, slots=True)
class CronTuning:
    """The periodic jobs, run by arq's worker on their own queue (``workers``)."""

    timeout: float = 120.0
    max_jobs: int = 4
    health_check_every: int = 30
    poll_delay: float = 0.5
    discover_every_minutes: int = 5
    purge_at_minute: int = 17  # hourly
    #: rows one retention transaction deletes at most (short transactions: on SQLite a long
    #: one would stall every writer)
    purge_batch: int = 1000


@dataclass(frozen=True, slots=True)
class ApiTuning:
    """The API's protection against its own clients (``relay.api.limits``)."""

    #: /v1 requests one process works on at once; more are answered 503 at once. Twice the
    #: database pool (10 + 10 overflow): beyond that requests only queue for a connection
    max_in_flight: int = 40
    #: per token (owner), sustained requests per second and burst, per API process: well
    #: above what a service managing its subscriptions needs, well below a runaway loop
    per_token_rate: float = 100.0
    per_token_burst: int = 200
    #: ``POST …/test`` per owner: it reaches out to a URL and reports what came back, so it
    #: must not be a fast probe (it once ran ~350 times a second)
    test_rate: float = 1.0
    test_burst: int = 10
    #: seconds a request waits for a database connection before it is answered 503
    pool_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class GcTuning:
    """Python's cyclic garbage collector in a process that runs a worker
    (``workers.process.tune_garbage_collector``). Measured with ``gc.callbacks`` during
    ``bench/throughput.py`` on PostgreSQL: with Python's defaults (700, 10, 10) a busy
    worker made ~150 young and over one full collection a second, 7.1 s of its 28.6 s of
    CPU (25 %); with these, 6 collections and 0.24 s in the whole run. Nearly everything it
    allocates is freed by reference counting, so young collections found little to free."""

    #: net allocations between young collections, and young (then middle) collections
    #: between older ones
    threshold: tuple[int, int, int] = (50_000, 20, 10)


@dataclass(frozen=True, slots=True)
class Tuning:
    timeouts: Timeouts = field(default_factory=Timeouts)
    polling: PollingTuning = field(default_factory=PollingTuning)
    delivery: DeliveryTuning = field(default_factory=DeliveryTuning)
    reconcile: ReconcileTuning = field(default_factory=ReconcileTuning)
    cron: CronTuning = field(default_factory=CronTuning)
    api: ApiTuning = field(default_factory=ApiTuning)
    gc: GcTuning = field(default_factory=GcTuning)
    #: a long-running loop that failed is started again this much later (``relay.loops``)
    restart_delay: float = 1.0
    #: Redis commands per enqueue pipeline
    enqueue_batch: int = 2000
