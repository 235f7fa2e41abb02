"""What each process counts as it works: Prometheus counters in the process's own registry.

Counters are counted by the process that did the work, never derived from tables, so they are
monotonic (a retention purge cannot lower them) and cost nothing at scrape time. Each
``relay worker`` serves them on ``RELAY_METRICS_PORT`` (:func:`serve`); ``relay run``, which
is one process, adds them to its ``/metrics``. Prometheus sums them across workers
(``sum(rate(...))``). Labels are bounded (an attempt's result class, a Clever HTTP status);
per-subscription numbers come from the stats endpoint instead.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

from relay._exceptions import ConfigError

#: ``relay_delivery_attempts_total{result}``: what an attempt's outcome was.
RESULTS = ("succeeded", "http_error", "timeout", "connection_error", "refused")

DELIVERY_ATTEMPTS = Counter(
    "relay_delivery_attempts", "Webhook attempts recorded by this process", ["result"]
)
ATTEMPT_SECONDS = Histogram(
    "relay_delivery_attempt_duration_seconds",
    "Webhook attempt durations in this process (request start to response read)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 30),
)
CLEVER_REQUESTS = Counter(
    "relay_clever_requests",
    "Requests to Clever's API from this process, by HTTP status ('error': no response)",
    ["status"],
)
EVENTS_INGESTED = Counter("relay_events_ingested", "Clever events stored by this process")
for _result in RESULTS:
    DELIVERY_ATTEMPTS.labels(_result)  # exported as 0 before the first one, so rate() works


def count_attempt(result: str, duration_ms: int) -> None:
    DELIVERY_ATTEMPTS.labels(result).inc()
    ATTEMPT_SECONDS.observe(duration_ms / 1000)


def serve(port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve this process's metrics (and Python's process_* collectors) on ``port``, from
    a thread of its own, so a scrape is answered even while the event loop is busy; the
    caller shuts the returned server down."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise ConfigError(
            f"RELAY_METRICS_PORT={port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose a free port for each worker on this host"
        ) from None
    return server
