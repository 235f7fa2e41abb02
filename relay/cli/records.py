"""``relay records list|show``: the roster, Clever's records as the relay knows them now,
through the REST API (any token)."""

from __future__ import annotations

import argparse
import json

from relay.cli.operator import (
    ApiClient,
    cell,
    emit,
    leaf,
    main,
    positive,
    sub_commands,
    table,
    when,
)

NAME = "records"
HELP = "list or show a running relay's roster: Clever's records as they are now"

__all__ = ["HELP", "NAME", "add_arguments", "main"]


def list_records(api: ApiClient, args: argparse.Namespace) -> int:
    params = {
        "district": args.district,
        "type": args.type,
        "school": args.school,
        "role": args.role,
    }
    items, more = api.collect("/v1/records", params, args.limit)
    if args.json:
        return emit(args, items, "")
    if not items:
        print("no records (a district's roster fills as events arrive, or with a sync)")
        return 0
    headers = ("TYPE", "ID", "DISTRICT", "NAME", "EVENT", "UPDATED (UTC)")
    rows = [
        (
            r["type"],
            r["id"],
            r["district"],
            cell(_name(r["object"]), 40),
            cell(r["event_id"]),
            when(r["updated_at"]),
        )
        for r in items
    ]
    print(table(headers, rows))
    if more:
        print(f"(first {len(items)}; --limit N for more)")
    return 0


def show_record(api: ApiClient, args: argparse.Namespace) -> int:
    record = api.get(f"/v1/records/{args.record}")
    return emit(args, record, json.dumps(record, indent=2))


def _name(record: dict[str, object]) -> str:
    """A readable label: a user's first and last name, else the record's ``name``."""
    name = record.get("name")
    if isinstance(name, dict):
        return " ".join(str(name[k]) for k in ("first", "last") if name.get(k))
    return "" if name is None else str(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = sub_commands(parser)
    listing = leaf(commands, "list", "list records, filtered", list_records)
    listing.add_argument("--district", help="one Clever district id")
    listing.add_argument("--type", help="users, sections, schools, courses, terms, ...")
    listing.add_argument("--school", help="records of this school")
    listing.add_argument("--role", help="users holding this role (student, teacher, ...)")
    listing.add_argument("--limit", type=positive, default=100, help="at most N (default 100)")
    show = leaf(commands, "show", "show one record as the relay knows it now", show_record)
    show.add_argument("record", help="the Clever record id")
