"""``relay deliveries list|show|retry``: the delivery log, through the REST API (see operator)."""

from __future__ import annotations

from relay.cli.operator import add_deliveries_arguments as add_arguments
from relay.cli.operator import main

NAME = "deliveries"
HELP = "inspect the delivery log of a running relay and re-send (list, show, retry)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]
