"""The README's run command end to end: ``relay run`` on embedded defaults (SQLite, embedded
Redis, the simulator) and ``relay listen`` showing verified deliveries, as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from relay.delivery.signing import generate_secret, webhook_headers
from tests.support.processes import RELAY, RelayProcess, relay_env
from tests.support.servers import free_port


def wait_for_text(process: RelayProcess, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = process.output()
        if needle in text:
            return text
        if process.proc.poll() is not None:
            raise AssertionError(f"{process.args} exited:\n{text[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not seen in {process.args}:\n{process.output()[-3000:]}")


def test_run_on_embedded_defaults_and_listen(tmp_path: Path) -> None:
    api_port, sim_port, listen_port = free_port(), free_port(), free_port()
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    cwd = os.getcwd()
    os.chdir(workdir)  # relay run keeps relay.db and .relay/ in the working directory
    try:
        run = RelayProcess(
            ["run", "--port", str(api_port), "--simulator-port", str(sim_port),
             "--simulator-rate", "5"],
            {"RELAY_ALLOW_LOOPBACK": "false"},  # relay run allows loopback by itself
            tmp_path / "run.log",
        )  # fmt: skip
        listen = None
        try:
            banner = wait_for_text(run, "Ctrl-C stops everything")
            assert "admin token: rat_" in banner
            assert (workdir / "relay.db").exists()
            assert (workdir / ".relay" / "admin_token").exists()
            listen = RelayProcess(
                ["listen", "--api", f"http://127.0.0.1:{api_port}", "--port", str(listen_port)],
                {}, tmp_path / "listen.log",
            )  # fmt: skip
            text = wait_for_text(listen, "✓ ", timeout=30)
            assert "district=" in text
            # one process: its /metrics has the worker's counters beside the gauges
            scraped = httpx.get(f"http://127.0.0.1:{api_port}/metrics").text
            assert "relay_deliveries_waiting" in scraped
            assert 'relay_delivery_attempts_total{result="succeeded"}' in scraped

            # a forged delivery is refused and said so
            forged = generate_secret()
            body = b'{"id":"x","type":"users.updated"}'
            response = httpx.post(
                f"http://127.0.0.1:{listen_port}/",
                content=body,
                headers=webhook_headers([forged], "forged-id", body),
            )
            assert response.status_code == 401
            wait_for_text(listen, "forged-id BAD SIGNATURE")
        finally:
            # stop both before asserting, so a failure never leaves a process behind
            listen_code = listen.stop() if listen is not None else 0
            run_code = run.stop()
        assert (listen_code, run_code) == (0, 0)
        output = run.output()
        assert "Traceback" not in output, output[-3000:]
        # quiet by default: no uvicorn start lines (the banner says it), none of arq's
        # per-cron lines, no colour copies, no per-page or per-attempt lines at INFO
        for noise in ("color_message", "→ cron:", "← cron:", '"uvicorn.error"', "delivery attempt"):
            assert noise not in output, noise
        assert "Context impl" not in output
        admin = (workdir / ".relay" / "admin_token").read_text().strip()
        assert admin not in (tmp_path / "listen.log").read_text()
    finally:
        os.chdir(cwd)


def test_a_port_in_use_is_one_line_naming_it_and_the_option(tmp_path: Path) -> None:
    """A second ``relay run`` (here: its ports held by sockets) stops at once, before it
    migrates or starts a Redis: one line, the port, the option to change it, no traceback."""
    for option, what in (("--port", "the API"), ("--simulator-port", "the Clever simulator")):
        holder = socket.create_server(("127.0.0.1", 0))
        held = holder.getsockname()[1]
        ports = {"--port": str(free_port()), "--simulator-port": str(free_port())}
        ports[option] = str(held)
        try:
            done = subprocess.run(
                [*RELAY, "run", *(x for pair in ports.items() for x in pair)],
                env=relay_env({"RELAY_DATA_DIR": str(tmp_path / ".relay")}),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            holder.close()
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr == (
            f"relay: {what}: port {held} on 127.0.0.1 is already in use (is another `relay "
            f"run` running?); stop it, or choose another port with {option}\n"
        )
        assert not (tmp_path / "relay.db").exists()
