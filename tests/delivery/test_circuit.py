"""When a subscription's circuit opens (``relay.delivery.circuit``)."""

from __future__ import annotations

import time

from relay.delivery.circuit import Circuits
from relay.delivery.sender import AttemptOutcome

TIMEOUT = AttemptOutcome(
    status_code=None, duration_ms=100, error="timeout: no response within 0.1s"
)
ANSWER = AttemptOutcome(status_code=204, duration_ms=3)


def test_timeouts_together_are_one_stall_not_a_dead_endpoint() -> None:
    circuits = Circuits(after=3, span=0.2, cooldown=5, longest=60)
    for _ in range(40):  # forty attempts sent at once, all timing out at once
        circuits.observe("sub_a", TIMEOUT)
    assert circuits.wait("sub_a") is None


def test_timeouts_over_the_span_open_it_and_an_answer_closes_it() -> None:
    circuits = Circuits(after=3, span=0.05, cooldown=5, longest=60)
    for _ in range(3):
        circuits.observe("sub_a", TIMEOUT)
        time.sleep(0.03)
    wait = circuits.wait("sub_a")
    assert wait is not None
    assert 4 < wait <= 5.5
    assert circuits.wait("sub_b") is None  # per subscription
    circuits.observe("sub_a", ANSWER)  # an attempt already out came back: reachable
    assert circuits.wait("sub_a") is None


def test_a_probe_that_times_out_doubles_the_cooldown() -> None:
    circuits = Circuits(after=2, span=0.0, cooldown=0.05, longest=0.15)
    circuits.observe("sub_a", TIMEOUT)
    circuits.observe("sub_a", TIMEOUT)
    time.sleep(0.06)
    assert circuits.wait("sub_a") is None  # the probe goes
    assert circuits.wait("sub_a") is not None  # the others wait for it
    circuits.observe("sub_a", TIMEOUT)  # the probe timed out: 0.1 s now
    wait = circuits.wait("sub_a")
    assert wait is not None
    assert wait > 0.09
