"""``relay run``: everything in one command on embedded defaults.

Migrates the database, starts an embedded Redis when ``RELAY_REDIS_URL`` is unset, and runs
the API and a worker in one process. With no Clever credentials and no real district
registered, it also runs the bundled Clever simulator and registers its districts, so a
newcomer sees events flow within seconds (``relay listen`` in another terminal shows them).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket

from sqlmodel import col, delete, select

from relay._exceptions import ConfigError
from relay.api.app import create_app
from relay.clever.simulator import Simulator, SimulatorConfig
from relay.clever.simulator import create_app as create_simulator
from relay.clever.simulator.cli import DEFAULT_RATE
from relay.cli.migrate import upgrade
from relay.cli.serving import QuietServer, listen_on, make_server, stop_on_signals
from relay.db import Database, crypto
from relay.db.crypto import reencrypt
from relay.db.models import District
from relay.logs import quiet_server_banners
from relay.queue.embedded import EmbeddedRedis
from relay.secrets import RuntimeSecrets, resolve_secrets
from relay.settings import Settings, get_settings
from workers.process import run_worker, tune_garbage_collector

NAME = "run"
HELP = "run everything on embedded defaults (migrate, Redis, API, worker, simulator)"
SIMULATED = "simulator"
logger = logging.getLogger("relay.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="API host (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="API port (default %(default)s)")
    parser.add_argument(
        "--simulator", choices=("auto", "on", "off"), default="auto",
        help="run the bundled Clever simulator: auto = when no Clever is configured",
    )  # fmt: skip
    parser.add_argument("--simulator-port", type=int, default=8765)
    parser.add_argument(
        "--simulator-rate", type=float, default=DEFAULT_RATE,
        help="simulated events per second per district (default %(default)s)",
    )  # fmt: skip


def simulator_config(rate: float) -> SimulatorConfig:
    """The simulated Clever of ``relay run``: the README's example ids are its (seed 0)."""
    return SimulatorConfig(districts=2, events_per_second=rate)


async def _wants_simulator(settings: Settings, db: Database, choice: str) -> bool:
    if choice != "auto":
        return choice == "on"
    if settings.clever_credentials is not None:
        return False
    async with db.read() as session:
        sources = set((await session.exec(select(District.token_source))).all())
    return sources <= {SIMULATED}


async def _register_simulated(db: Database, sim: Simulator) -> None:
    """Districts of an earlier run's simulator are gone with it; register this one's."""
    async with db.write() as session:
        await session.exec(delete(District).where(col(District.token_source) == SIMULATED))
        for district in sim.districts.values():
            session.add(
                District(
                    id=district.id,
                    name=f"{district.name} (simulated)",
                    token=district.token,
                    token_source=SIMULATED,
                    start_from="earliest",
                )
            )


def _banner(args: argparse.Namespace, runtime: RuntimeSecrets, simulated: bool) -> str:
    api = f"http://{args.host}:{args.port}"
    lines = [
        "",
        f"  Clever Events Relay is running: API {api}  (docs {api}/docs, failures {api}/ui)",
        f"  admin token: {runtime.admin_token}"
        + ("  (generated; kept in the data dir)" if runtime.admin_token_generated else ""),
        f'  try:  curl -s {api}/v1/districts -H "Authorization: Bearer {runtime.admin_token}"',
    ]
    if simulated:
        lines.append(
            f"  Clever is simulated at http://127.0.0.1:{args.simulator_port} "
            f"({args.simulator_rate:g} events/s per district)."
        )
    lines += [
        "  watch deliveries arrive, in another terminal:  .venv/bin/relay listen",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


async def _run(
    args: argparse.Namespace,
    settings: Settings,
    runtime: RuntimeSecrets,
    redis_url: str,
    sockets: dict[str, socket.socket],
) -> None:
    stop = stop_on_signals()
    quiet_server_banners()

    # one laptop: relay listen and local receivers are on loopback
    settings = settings.model_copy(update={"allow_loopback": True})
    db = Database(settings.database_url)
    crypto.use(runtime.keyring)
    # what an earlier relay stored in plain text (or under an older key) is encrypted now;
    # what no key reads is the start-up check's to report (the worker's, below)
    await reencrypt(db, runtime.keyring)
    servers: list[tuple[QuietServer, socket.socket]] = []
    simulated = "simulator" in sockets and await _wants_simulator(settings, db, args.simulator)
    if simulated:
        sim = Simulator(simulator_config(args.simulator_rate))
        simulator = make_server(create_simulator(sim), "127.0.0.1", args.simulator_port)
        servers.append((simulator, sockets["simulator"]))
        settings = settings.model_copy(
            update={"clever_api_url": f"http://127.0.0.1:{args.simulator_port}"}
        )
        await _register_simulated(db, sim)
    # one process: the worker's start-up checks the keys for both
    app = create_app(settings, runtime, db, redis_url, process_counters=True, check_keys=False)
    servers.append((make_server(app, args.host, args.port), sockets["api"]))

    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in servers]
    worker = asyncio.create_task(run_worker(settings, redis_url, stop))
    while not all(s.started for s, _ in servers):
        if any(t.done() for t in tasks):
            stop.set()
            break
        await asyncio.sleep(0.05)
    else:
        print(_banner(args, runtime, simulated), flush=True)
    await stop.wait()
    await worker
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await db.dispose()


def _listen(args: argparse.Namespace) -> dict[str, socket.socket]:
    """Both ports first: a second ``relay run`` stops here with one line, before it touches
    the database or starts a Redis."""
    sockets = {"api": listen_on(args.host, args.port, "the API", "--port")}
    if args.simulator != "off":
        try:
            sockets["simulator"] = listen_on(
                "127.0.0.1", args.simulator_port, "the Clever simulator", "--simulator-port"
            )
        except ConfigError:
            sockets["api"].close()
            raise
    return sockets


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    sockets = _listen(args)
    upgrade(settings.database_url)
    runtime = resolve_secrets(settings, generate=True)
    embedded = None
    redis_url = settings.redis_url
    if not redis_url:
        embedded = EmbeddedRedis(settings.data_dir).start()
        redis_url = embedded.url
    tune_garbage_collector(settings.tuning.gc)
    try:
        asyncio.run(_run(args, settings, runtime, redis_url, sockets))
    finally:
        for sock in sockets.values():
            sock.close()
        if embedded is not None:
            embedded.stop()
    return 0
