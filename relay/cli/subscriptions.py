"""``relay subscriptions list|show|create|patch|delete|rotate-secret|test|replay|bootstrap``:
a running relay's subscriptions, through the REST API.

Filters are comma lists (``--record-types users,sections``); in ``patch`` an empty value
(``--schools ""``) clears that filter. ``--secret`` is not offered: a secret on a command line
ends up in shell history and ``ps``; the relay generates one and ``create`` prints it once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from relay.cli.operator import (
    ApiClient,
    cell,
    emit,
    fields,
    leaf,
    main,
    name_list,
    sub_commands,
    table,
    when,
)

NAME = "subscriptions"
HELP = "manage a running relay's subscriptions (list, create, patch, test, replay, ...)"
FILTERS = ("record_types", "actions", "schools", "districts", "roles", "changed")

__all__ = ["HELP", "NAME", "add_arguments", "main"]


def _filters(sub: dict[str, Any]) -> str:
    parts = [f"{name}={','.join(sub[name])}" for name in FILTERS if sub.get(name)]
    return " ".join(parts) or "(everything)"


def _shown(sub: dict[str, Any]) -> list[tuple[str, str]]:
    state = "enabled" if sub["enabled"] else f"DISABLED ({sub['disabled_reason'] or 'by hand'})"
    return [
        ("subscription", sub["id"]),
        ("owner", sub["owner"]),
        ("url", sub["url"]),
        ("state", state),
        ("ordered", "yes" if sub["ordered"] else "no"),
        ("filters", _filters(sub)),
        ("description", cell(sub["description"], 200)),
        ("created", when(sub["created_at"]) + " UTC"),
        ("updated", when(sub["updated_at"]) + " UTC"),
    ]


def _warn(answer: dict[str, Any]) -> None:
    for warning in answer.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)


def list_subscriptions(api: ApiClient, args: argparse.Namespace) -> int:
    items, _ = api.collect("/v1/subscriptions", {"owner": args.owner}, None)
    if args.json:
        return emit(args, items, "")
    if not items:
        print("no subscriptions (create one with: relay subscriptions create --url URL)")
        return 0
    rows = [
        (
            s["id"],
            s["owner"],
            "enabled" if s["enabled"] else "DISABLED",
            "yes" if s["ordered"] else "-",
            cell(s["url"], 50),
            cell(_filters(s), 50),
        )
        for s in items
    ]
    print(table(("ID", "OWNER", "STATE", "ORDERED", "URL", "FILTERS"), rows))
    return 0


def show_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    sub = api.get(f"/v1/subscriptions/{args.id}")
    return emit(args, sub, fields(_shown(sub)))


def _body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body: only what was given on the command line."""
    body: dict[str, Any] = {
        name: getattr(args, name) for name in FILTERS if getattr(args, name) is not None
    }
    for name in ("url", "description", "enabled", "ordered", "owner"):
        if getattr(args, name, None) is not None:
            body[name] = getattr(args, name)
    return body


def create_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    sub = api.request("POST", "/v1/subscriptions", body=_body(args))
    _warn(sub)
    shown = [*_shown(sub), ("secret", f"{sub['secret']}  (shown only now; keep it)")]
    return emit(args, sub, fields(shown))


def patch_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    body = _body(args)
    if not body:
        print("relay: nothing to change: give at least one option (see --help)", file=sys.stderr)
        return 2
    sub = api.request("PATCH", f"/v1/subscriptions/{args.id}", body=body)
    _warn(sub)
    return emit(args, sub, fields(_shown(sub)))


def delete_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/v1/subscriptions/{args.id}")
    text = f"subscription {args.id} deleted (its deliveries still waiting are cancelled)"
    return emit(args, {"id": args.id, "deleted": True}, text)


def rotate_secret(api: ApiClient, args: argparse.Namespace) -> int:
    sub = api.request("POST", f"/v1/subscriptions/{args.id}/rotate-secret")
    text = f"{sub['secret']}\n(the new secret, shown only now; the old one keeps signing for 24 h)"
    return emit(args, sub, text)


def test_subscription(api: ApiClient, args: argparse.Namespace) -> int:
    """Exit status 1 when the endpoint did not accept the test, for scripts."""
    sent = api.request("POST", f"/v1/subscriptions/{args.id}/test")
    if args.json:
        emit(args, sent, "")
    else:
        outcome = "accepted" if sent["succeeded"] else "FAILED"
        answer = cell(sent["status_code"]) if sent["status_code"] is not None else "no answer"
        print(f"relay.test {outcome}: {answer} in {sent['duration_ms']} ms")
        if sent["error"]:
            print(f"error: {sent['error']}")
        if sent["response_excerpt"]:
            print(f"response: {cell(sent['response_excerpt'], 200)}")
        print(
            f"(webhook-id {sent['webhook_id']}; in the log: relay deliveries show "
            f"{sent['delivery_id']})"
        )
    return 0 if sent["succeeded"] else 1


def replay(api: ApiClient, args: argparse.Namespace) -> int:
    window = {"since": args.since} | ({"until": args.until} if args.until else {})
    accepted = api.request("POST", f"/v1/subscriptions/{args.id}/replay", body=window)
    text = (
        f"subscription {args.id}: {accepted['requeued']} stored events will be sent again "
        f"(follow them with: relay deliveries list --subscription {args.id})"
    )
    return emit(args, accepted, text)


def bootstrap(api: ApiClient, args: argparse.Namespace) -> int:
    accepted = api.request("POST", f"/v1/subscriptions/{args.id}/bootstrap")
    text = (
        f"subscription {args.id}: {accepted['requeued']} roster records will be sent as "
        f"created events (source: snapshot; follow them with: relay deliveries list "
        f"--subscription {args.id})"
    )
    return emit(args, accepted, text)


def _settings(parser: argparse.ArgumentParser, creating: bool) -> None:
    parser.add_argument("--url", required=creating, help="absolute http(s) URL to POST to")
    for name in FILTERS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=name_list,
            metavar="A,B",
            help=f"{name} filter, a comma list" + ("" if creating else ' ("" clears it)'),
        )
    parser.add_argument("--description")
    parser.add_argument(
        "--enabled",
        action=argparse.BooleanOptionalAction,
        help="enable (a disabled subscription: re-enable) or --no-enabled to pause it",
    )
    parser.add_argument(
        "--ordered",
        action=argparse.BooleanOptionalAction,
        help="deliver each record's events one at a time, in Clever's order",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = sub_commands(parser)
    listing = leaf(commands, "list", "list subscriptions", list_subscriptions)
    listing.add_argument("--owner", help="admin only: one owner's subscriptions")
    show = leaf(commands, "show", "show a subscription", show_subscription)
    show.add_argument("id", help="subscription id")
    create = leaf(
        commands, "create", "create a subscription (prints its secret once)", create_subscription
    )
    _settings(create, creating=True)
    create.add_argument("--owner", help="admin only: the owner (default admin)")
    patch = leaf(commands, "patch", "change a subscription", patch_subscription)
    patch.add_argument("id", help="subscription id")
    _settings(patch, creating=False)
    delete = leaf(commands, "delete", "delete a subscription", delete_subscription)
    delete.add_argument("id", help="subscription id")
    rotate = leaf(commands, "rotate-secret", "a new signing secret (prints it once)", rotate_secret)
    rotate.add_argument("id", help="subscription id")
    test = leaf(
        commands,
        "test",
        "send a signed relay.test now and show the answer (exit 1 if it was not accepted)",
        test_subscription,
    )
    test.add_argument("id", help="subscription id")
    replay_cmd = leaf(
        commands,
        "replay",
        "send a subscription's matching stored events of a time window again",
        replay,
    )
    replay_cmd.add_argument("id", help="subscription id")
    replay_cmd.add_argument(
        "--since", required=True, metavar="TIME", help="ISO 8601 with an offset"
    )
    replay_cmd.add_argument("--until", metavar="TIME", help="ISO 8601 with an offset (default now)")
    bootstrap_cmd = leaf(
        commands,
        "bootstrap",
        "send a subscription the roster: a created event per record its filters match",
        bootstrap,
    )
    bootstrap_cmd.add_argument("id", help="subscription id")
