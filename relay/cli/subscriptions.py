"""``relay subscriptions replay``: through the REST API (see operator)."""

from __future__ import annotations

from relay.cli.operator import add_subscriptions_arguments as add_arguments
from relay.cli.operator import main

NAME = "subscriptions"
HELP = "act on a running relay's subscriptions (replay stored history)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]
