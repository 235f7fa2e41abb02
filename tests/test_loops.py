"""``supervise``: a long-running loop that fails is logged and started again, whatever it
raised, until the worker stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from relay.loops import supervise


async def test_a_failing_step_is_restarted_until_stopped(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    calls: list[int] = []

    async def step() -> float:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        if len(calls) == 2:
            raise RedisConnectionError("Redis went away")
        if len(calls) == 5:
            stop.set()
        return 0.0

    with caplog.at_level(logging.WARNING, logger="relay.worker"):
        await asyncio.wait_for(supervise("test", step, stop, restart_delay=0.01), 5)
    assert len(calls) == 5
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("ERROR", "loop failed; restarting it"),
        ("WARNING", "connection lost; retrying"),
    ]


async def test_stop_ends_the_pause_between_steps() -> None:
    stop = asyncio.Event()

    async def step() -> float:
        return 60.0  # a long pause: stop must cut it short

    task = asyncio.create_task(supervise("test", step, stop, restart_delay=1.0))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)
