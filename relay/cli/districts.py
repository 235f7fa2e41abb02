"""``relay districts list|resync``: the districts and how each is doing, and a sync of one's
roster from Clever's Data API, through the REST API."""

from __future__ import annotations

import argparse
from typing import Any

from relay.cli.operator import ApiClient, cell, emit, leaf, main, sub_commands, table, when

NAME = "districts"
HELP = "list a running relay's districts, or sync one's roster (admin)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]


def list_districts(api: ApiClient, args: argparse.Namespace) -> int:
    items, _ = api.collect("/v1/districts", {}, None)
    if args.json:
        return emit(args, items, "")
    if not items:
        print("no districts registered (add one with POST /v1/districts)")
        return 0
    headers = (
        "ID",
        "NAME",
        "STATUS",
        "CURSOR",
        "LAST POLLED (UTC)",
        "LAG (s)",
        "LAST SYNC",
        "LAST ERROR",
    )
    rows = [
        (
            d["id"],
            cell(d["name"], 30),
            d["status"],
            cell(d["cursor"]),
            when(d["last_polled_at"]),
            "-" if d["lag_seconds"] is None else f"{d['lag_seconds']:.1f}",
            sync_cell(d.get("sync")),
            cell(d["last_error"], 50),
        )
        for d in items
    ]
    print(table(headers, rows, right=frozenset({5})))
    return 0


def sync_cell(sync: dict[str, Any] | None) -> str:
    """``succeeded 2026-12-07 21:30:00 (+3 ~1 -0)``: state, end, and what it changed."""
    if not sync:
        return "-"
    counts = f"+{sync['created']} ~{sync['updated']} -{sync['deleted']}"
    if sync["state"] == "running":
        return f"running ({sync['records_read']} read, {counts})"
    return f"{sync['state']} {when(sync['finished_at'])} ({counts})"


def resync_district(api: ApiClient, args: argparse.Namespace) -> int:
    body = {"emit_created": not args.no_created}
    district = api.request("POST", f"/v1/districts/{args.district}/resync", body=body)
    return emit(
        args,
        district,
        f"sync {district['sync']['id']} of {district['id']} started: every record Clever "
        "shares is read and each difference with the roster sent as an event "
        "(source: sync); `relay districts list` shows its progress",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = sub_commands(parser)
    leaf(commands, "list", "list districts and how each is doing", list_districts)
    resync = leaf(
        commands,
        "resync",
        "read the district's records from Clever's Data API now and send what differs",
        resync_district,
    )
    resync.add_argument("district", help="the Clever district id")
    resync.add_argument(
        "--no-created",
        action="store_true",
        help="records the roster does not hold join it without a created event (for a "
        "district registered before the roster, whose subscribers hold its records already)",
    )
