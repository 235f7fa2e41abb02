"""``relay simulate``: the Clever simulator as its own server (wired in by ``relay.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from relay.clever.simulator.app import create_app
from relay.clever.simulator.state import DAY, Simulator, SimulatorConfig

#: events per second per district by default: enough to watch them flow, as under relay run
DEFAULT_RATE = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--districts", type=int, default=2, help="number of districts")
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help="new events per second per district (default %(default)s; 0: only --backlog "
        "and --script)",
    )
    parser.add_argument("--backlog", type=int, default=0, help="events per district at start")
    parser.add_argument(
        "--retention", type=float, default=30 * DAY, help="seconds events are kept (30 days)"
    )
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of a random fault per request"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (same ids and tokens)")
    parser.add_argument("--script", type=Path, default=None, help="JSON file of scripted events")
    parser.add_argument("--rate-limit", type=int, default=1200, help="requests per window")
    parser.add_argument("--client-id", default="sim-client-id", help="/oauth/tokens client id")
    parser.add_argument(
        "--client-secret", default="sim-client-secret", help="/oauth/tokens client secret"
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        seed=args.seed,
        districts=args.districts,
        events_per_second=args.rate,
        backlog=args.backlog,
        retention_seconds=args.retention,
        fault_probability=args.fault_rate,
        script=args.script,
        rate_limit=getattr(args, "rate_limit", 1200),
        client_id=getattr(args, "client_id", "sim-client-id"),
        client_secret=getattr(args, "client_secret", "sim-client-secret"),
    )


def banner(sim: Simulator, base: str) -> str:
    """What to run against it: the simulator's own credentials (it is Clever, for testing;
    nothing here is a secret of the relay's)."""
    config = sim.config
    lines = [
        f"Clever simulator on {base}  (API {base}/v3.1/events and /v3.1/users etc., "
        f"control {base}/_sim/state)",
        f"  {config.events_per_second:g} new events/s per district"
        + ("" if config.events_per_second else " (none: pass --rate to make some)"),
        f"  OAuth: {base}/oauth/tokens  client_id={config.client_id} "
        f"client_secret={config.client_secret}",
    ]
    for district in sim.districts.values():
        lines.append(
            f"  district {district.id}  token {district.token}  ({len(district.store)} events)"
        )
    lines += [
        "Point relay workers (and relay serve) at it; they register its districts by token "
        "discovery:",
        f"  export RELAY_CLEVER_API_URL={base} RELAY_CLEVER_OAUTH_URL={base}",
        f"  export CLEVER_CLIENT_ID={config.client_id} CLEVER_CLIENT_SECRET={config.client_secret}",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    sim = Simulator(config_from_args(args))
    print(banner(sim, f"http://{args.host}:{args.port}"), flush=True)
    uvicorn.run(create_app(sim), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="relay simulate")
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
