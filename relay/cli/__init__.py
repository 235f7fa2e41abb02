"""The ``relay`` command: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from relay._exceptions import ConfigError
from relay.cli import (
    deliveries,
    districts,
    keys,
    listen,
    migrate,
    records,
    run,
    serve,
    simulate,
    subscriptions,
    tokens,
    worker,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Clever Events Relay: Clever events in, signed webhooks out."
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        run,
        serve,
        worker,
        migrate,
        simulate,
        listen,
        deliveries,
        subscriptions,
        districts,
        records,
        keys,
        tokens,
    ):
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from relay.logs import configure_logging

    configure_logging(args.log_level)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
