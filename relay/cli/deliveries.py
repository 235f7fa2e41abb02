"""``relay deliveries list|show|retry|recover``: the delivery log, through the REST API."""

from __future__ import annotations

import argparse

from relay.cli.operator import (
    ApiClient,
    cell,
    emit,
    fields,
    leaf,
    main,
    positive,
    sub_commands,
    table,
    when,
)

NAME = "deliveries"
HELP = "inspect and re-send a running relay's deliveries"
#: How ``show`` marks an attempt that the retry schedule did not send.
TRIGGER_MARKS = {"schedule": "", "manual": "manual", "test": "test"}

__all__ = ["HELP", "NAME", "add_arguments", "main"]


def list_deliveries(api: ApiClient, args: argparse.Namespace) -> int:
    params = {
        "status": args.status,
        "subscription_id": args.subscription,
        "event_type": args.event_type,
        "since": args.since,
        "until": args.until,
    }
    items, more = api.collect("/v1/deliveries", params, args.limit)
    if args.json:
        return emit(args, items, "")
    if not items:
        print("no deliveries match")
        return 0
    headers = ["ID", "STATUS", "SUBSCRIPTION", "EVENT", "TYPE", "TRIES", "CODE"]
    headers += ["CREATED (UTC)", "NEXT ATTEMPT (UTC)"]
    rows = [
        (
            str(d["id"]),
            d["status"],
            d["subscription_id"],
            d["event_id"],
            d["event_type"],
            str(d["attempts"]),
            cell(d["last_status_code"]),
            when(d["created_at"]),
            when(d["next_attempt_at"]),
        )
        for d in items
    ]
    print(table(headers, rows, right=frozenset({0, 5, 6})))
    if more:
        print(f"(the newest {len(items)}; more match: raise --limit or narrow the filters)")
    return 0


def show_delivery(api: ApiClient, args: argparse.Namespace) -> int:
    d = api.get(f"/v1/deliveries/{args.id}")
    if args.json:
        return emit(args, d, "")
    manual = sum(1 for a in d["attempts"] if a.get("trigger", "schedule") != "schedule")
    count = str(len(d["attempts"])) + (f" ({manual} not from the schedule)" if manual else "")
    print(
        fields(
            [
                ("delivery", str(d["id"])),
                ("status", d["status"]),
                ("subscription", d["subscription_id"]),
                ("event", f"{d['event_id']} ({d['event_type']})"),
                ("created", when(d["created_at"]) + " UTC"),
                ("next attempt", when(d["next_attempt_at"])),
                ("last status", cell(d["last_status_code"])),
                ("attempts", count),
            ]
        )
    )
    if d["attempts"]:
        rows = [
            (
                str(n),
                when(a["attempted_at"]),
                TRIGGER_MARKS.get(a.get("trigger", "schedule"), a.get("trigger", "")) or "-",
                cell(a["status_code"]),
                f"{a['duration_ms']} ms",
                cell(a["error"], 40),
                cell(a["response_excerpt"], 40),
            )
            for n, a in enumerate(d["attempts"], 1)
        ]
        headers = ("#", "ATTEMPTED (UTC)", "BY", "CODE", "DURATION", "ERROR", "RESPONSE")
        print("\n" + table(headers, rows, right=frozenset({0, 3, 4})))
    return 0


def retry_delivery(api: ApiClient, args: argparse.Namespace) -> int:
    accepted = api.request("POST", f"/v1/deliveries/{args.id}/retry")
    if args.json:
        return emit(args, accepted, "")
    print(
        f"delivery {accepted['id']}: {accepted['status']}, a manual attempt is queued "
        "(see it with: relay deliveries show " + str(accepted["id"]) + ")"
    )
    return 0


def recover_deliveries(api: ApiClient, args: argparse.Namespace) -> int:
    window = {"since": args.since} | ({"until": args.until} if args.until else {})
    path = f"/v1/subscriptions/{args.subscription}/recover"
    accepted = api.request("POST", path, body=window)
    if args.json:
        return emit(args, accepted, "")
    print(
        f"subscription {args.subscription}: {accepted['requeued']} failed deliveries get a "
        "manual attempt now (follow them with: relay deliveries list --subscription "
        f"{args.subscription})"
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = sub_commands(parser)
    listing = leaf(commands, "list", "list deliveries, newest first", list_deliveries)
    listing.add_argument("--status", help="pending, retrying, succeeded, failed, cancelled")
    listing.add_argument("--subscription", metavar="ID", help="one subscription's deliveries")
    listing.add_argument("--event-type", metavar="TYPE", help="e.g. users.updated")
    listing.add_argument("--since", metavar="TIME", help="ISO 8601 (UTC when no offset)")
    listing.add_argument("--until", metavar="TIME", help="ISO 8601 (UTC when no offset)")
    listing.add_argument("--limit", type=positive, default=50, help="rows to show (default 50)")
    show = leaf(
        commands,
        "show",
        "show a delivery and its attempts (BY: manual or test for those the schedule did not send)",
        show_delivery,
    )
    show.add_argument("id", help="delivery id")
    retry = leaf(commands, "retry", "send a delivery again now (a manual attempt)", retry_delivery)
    retry.add_argument("id", help="delivery id")
    recover = leaf(
        commands,
        "recover",
        "re-send a subscription's failed deliveries created in a time window",
        recover_deliveries,
    )
    recover.add_argument("--subscription", required=True, metavar="ID", help="subscription id")
    recover.add_argument("--since", required=True, metavar="TIME", help="ISO 8601 with an offset")
    recover.add_argument("--until", metavar="TIME", help="ISO 8601 with an offset (default now)")
