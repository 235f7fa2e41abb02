"""``relay districts list``: the districts and how each is doing, through the REST API."""

from __future__ import annotations

import argparse

from relay.cli.operator import ApiClient, cell, emit, leaf, main, sub_commands, table, when

NAME = "districts"
HELP = "list a running relay's districts (admin)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]


def list_districts(api: ApiClient, args: argparse.Namespace) -> int:
    items, _ = api.collect("/v1/districts", {}, None)
    if args.json:
        return emit(args, items, "")
    if not items:
        print("no districts registered (add one with POST /v1/districts)")
        return 0
    headers = ("ID", "NAME", "STATUS", "CURSOR", "LAST POLLED (UTC)", "LAG (s)", "LAST ERROR")
    rows = [
        (
            d["id"],
            cell(d["name"], 30),
            d["status"],
            cell(d["cursor"]),
            when(d["last_polled_at"]),
            "-" if d["lag_seconds"] is None else f"{d['lag_seconds']:.1f}",
            cell(d["last_error"], 50),
        )
        for d in items
    ]
    print(table(headers, rows, right=frozenset({5})))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    leaf(sub_commands(parser), "list", "list districts and how each is doing", list_districts)
