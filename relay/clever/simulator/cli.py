"""``relay simulate``: the Clever simulator as its own server (wired in by ``relay.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from relay.clever.simulator.app import create_app
from relay.clever.simulator.state import DAY, Simulator, SimulatorConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    parser.add_argument("--districts", type=int, default=2, help="number of districts")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s per district")
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


def main(args: argparse.Namespace) -> int:
    sim = Simulator(config_from_args(args))
    base = f"http://{args.host}:{args.port}"
    print(f"Clever simulator on {base}  (API {base}/v3.1/events, control {base}/_sim/state)")
    print(
        f"OAuth: {base}/oauth/tokens  client_id={sim.config.client_id} "
        f"client_secret={sim.config.client_secret}"
    )
    for district in sim.districts.values():
        print(f"district {district.id}  token {district.token}  ({len(district.store)} events)")
    uvicorn.run(create_app(sim), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="relay simulate")
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
