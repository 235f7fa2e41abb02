"""uvicorn servers that share one event loop and one Ctrl-C with the rest of a command."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from relay._exceptions import ConfigError

GRACEFUL_SHUTDOWN_SECONDS = 5


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling (it would re-raise SIGTERM after shutting
    down, killing the process before the command's own cleanup runs)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, host: str, port: int) -> QuietServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return QuietServer(config)


def listen_on(host: str, port: int, what: str, option: str) -> socket.socket:
    """The listening socket for a server, bound before anything else starts, so a port in
    use stops the command with one line naming it (not uvicorn's error and a traceback)."""
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"{what}: port {port} on {host} is already in use (is another `relay run` "
                f"running?); stop it, or choose another port with {option}"
            ) from None
        raise ConfigError(
            f"{what}: cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
            f"address with {option}"
        ) from None


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
