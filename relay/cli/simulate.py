"""``relay simulate``: the bundled Clever simulator as its own server."""

from __future__ import annotations

from relay.clever.simulator.cli import add_arguments, main

NAME = "simulate"
HELP = "run the Clever simulator, Events and Data API (for demos, tests and benchmarks)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]
