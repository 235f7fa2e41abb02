"""A simulated Clever (v3.1): its Events API and, consistent with it, its Data API, for tests,
benchmarks and the ``relay run`` demo.

It reproduces the real API's quirks (``docs/architecture.md``, "Clever's behaviour"):
oldest-first paging with relative links, ``ending_before=last``, silent expiry of old
cursors, per-token fixed-window rate limits, HTML 404s, and faults injected on demand (on
one path if need be). The Data API serves each district's roster, which its events change
(so a full read plus the events after it gives the next full read) and drift changes with
no event (what a roster sync exists to find).
``create_app(Simulator(config))`` gives a Starlette app; ``/_sim/...`` is its control API.
"""

from __future__ import annotations

from relay.clever.simulator.app import create_app
from relay.clever.simulator.state import Simulator, SimulatorConfig

__all__ = ["Simulator", "SimulatorConfig", "create_app"]
