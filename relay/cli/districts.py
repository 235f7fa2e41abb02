"""``relay districts list``: polled districts and their health, through the REST API."""

from __future__ import annotations

from relay.cli.operator import add_districts_arguments as add_arguments
from relay.cli.operator import main

NAME = "districts"
HELP = "inspect the districts a running relay polls (list)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]
