"""Long-running loops that never die quietly.

A worker runs a few loops for its whole life: one consumer per delivery queue, the poll
supervisor, arq's cron worker. A loop that ended on an exception would strand its work until
someone restarted the process (and arq's ends whenever Redis goes away), so each runs under
:func:`supervise`: whatever a step raises is logged and the step runs again a moment later,
until the worker is told to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

logger = logging.getLogger("relay.worker")


async def sleep_until(deadline: float, stop: asyncio.Event) -> bool:
    """Sleep until ``deadline`` (loop time) or ``stop``; True if stopped."""
    timeout = deadline - asyncio.get_running_loop().time()
    if timeout <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def pause(seconds: float, stop: asyncio.Event) -> bool:
    """Sleep ``seconds`` or until ``stop``; True if stopped."""
    return await sleep_until(asyncio.get_running_loop().time() + seconds, stop)


async def supervise(
    name: str,
    step: Callable[[], Awaitable[float]],
    stop: asyncio.Event,
    *,
    restart_delay: float,
) -> None:
    """Run ``step`` again and again until ``stop``; it returns the seconds to wait before
    the next run (0: at once). A step that raises is logged (a lost connection as a warning:
    the Redis and database clients reconnect by themselves; anything else with its
    traceback) and runs again after ``restart_delay``."""
    while not stop.is_set():
        try:
            wait = await step()
        except (RedisError, OSError) as exc:
            logger.warning(
                "connection lost; retrying",
                extra={"loop": name, "error": f"{type(exc).__name__}: {exc}"},
            )
            wait = restart_delay
        except Exception:
            logger.exception("loop failed; restarting it", extra={"loop": name})
            wait = restart_delay
        if wait > 0 and await pause(wait, stop):
            return
