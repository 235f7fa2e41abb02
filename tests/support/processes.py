"""Real relay processes (``relay worker``, ``relay serve``, …) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

RELAY = [sys.executable, "-m", "relay.cli"]


def process_env(
    database_url: str, redis_url: str, clever_url: str, data_dir: Path, **overrides: str
) -> dict[str, str]:
    """The environment of a relay process in a test: the test's database, Redis and Clever,
    the test admin token and key, and fast settings (``overrides`` are RELAY_* names)."""
    from tests.support.config import ADMIN_TOKEN, ENCRYPTION_KEY

    return {
        "RELAY_DATABASE_URL": database_url,
        "RELAY_REDIS_URL": redis_url,
        "RELAY_CLEVER_API_URL": clever_url,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_SECRET_KEY": "test-secret-key",
        "RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "RELAY_DATA_DIR": str(data_dir),
        "RELAY_POLL_LEASE": "2",
        "RELAY_POLL_INTERVAL": "0.2",
    } | overrides


def relay_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "CLEVER_"))}
    # the receivers are on 127.0.0.1 (a test that checks the default passes "false")
    env |= {"RELAY_LOG_FORMAT": "json", "RELAY_ALLOW_LOOPBACK": "true", **settings_env}
    return env


class RelayProcess:
    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [*RELAY, *args],
            env=relay_env(env),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: kill_tree
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, jobs left in flight. (A worker's polling
        child sees its parent die and stops, releasing its leases: ``workers.polling``.)"""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def kill_tree(self) -> None:
        """SIGKILL to the process and its children at once, as when its host or container
        dies: nothing of it cleans up, a worker's polling child included."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()
        return int(self.proc.returncode)

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")


@contextmanager
def relay_process(args: list[str], env: Mapping[str, str], log: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(args, env, log)
    try:
        yield process
    finally:
        process.stop()


def spawned_children(pid: int) -> list[int]:
    """The live multiprocessing children of ``pid`` (a worker's polling process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
