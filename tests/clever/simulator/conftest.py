"""Fixtures: a small simulator served by uvicorn on 127.0.0.1, and an httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from relay.clever.simulator import Simulator, create_app
from tests.support.servers import serve
from tests.support.simulator import Sim, small_config


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """``make_sim(**config_overrides)`` starts a simulator; all are stopped at teardown."""
    stack: list[tuple[Any, Sim]] = []

    def start(**overrides: Any) -> Sim:
        sim = Simulator(small_config(**overrides))
        ctx = serve(create_app(sim))
        running = Sim(sim, ctx.__enter__())
        stack.append((ctx, running))
        return running

    yield start
    for ctx, running in reversed(stack):
        running.http.close()
        ctx.__exit__(None, None, None)


@pytest.fixture
def sim(make_sim: Any) -> Sim:
    running: Sim = make_sim()
    return running
