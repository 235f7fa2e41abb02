"""``relay worker``: polling, delivery and the reconciler (run as many as you like)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from relay._exceptions import ConfigError
from relay.queue.embedded import configured_redis_url
from relay.settings import Settings, get_settings
from workers.process import run_worker, tune_garbage_collector

NAME = "worker"
HELP = "run a worker: poll Clever, deliver webhooks, reconcile the queue"


def redis_url_for(settings: Settings) -> str:
    url = configured_redis_url(settings)
    if url:
        return url
    raise ConfigError(
        "RELAY_REDIS_URL: not set, and no embedded Redis is running in "
        f"{settings.data_dir} (start one with 'relay run', or set RELAY_REDIS_URL)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


async def serve_until_signalled(settings: Settings, redis_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, redis_url, stop)


def main(args: argparse.Namespace) -> int:
    del args
    settings = get_settings()
    tune_garbage_collector(settings.tuning.gc)
    # uvloop (installed with uvicorn[standard]) where available: a busy worker's event loop
    # is a measurable share of its CPU
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_signalled(settings, redis_url_for(settings)))
    else:
        uvloop.run(serve_until_signalled(settings, redis_url_for(settings)))
    return 0
