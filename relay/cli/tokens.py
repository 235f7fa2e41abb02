"""``relay tokens create|revoke``: service tokens (admin), through the REST API."""

from __future__ import annotations

import argparse
import sys

from relay.cli.operator import ApiClient, emit, leaf, main, sub_commands

NAME = "tokens"
HELP = "mint and revoke a running relay's service tokens (admin)"

__all__ = ["HELP", "NAME", "add_arguments", "main"]


def create_token(api: ApiClient, args: argparse.Namespace) -> int:
    minted = api.request("POST", "/v1/tokens", body={"owner": args.owner})
    if args.json:
        return emit(args, minted, "")
    print(minted["token"])
    print(
        f"(a new token for {minted['owner']!r}: it sees only {minted['owner']}'s "
        "subscriptions; earlier tokens of the owner stay valid until `relay tokens revoke "
        f"{minted['owner']}`)",
        file=sys.stderr,
    )
    return 0


def revoke_tokens(api: ApiClient, args: argparse.Namespace) -> int:
    api.request("DELETE", f"/v1/tokens/{args.owner}")
    if args.json:
        return emit(args, {"owner": args.owner, "revoked": True}, "")
    print(
        f"every token of {args.owner!r} is revoked (its subscriptions stay and keep "
        "delivering; `relay tokens create` gives the owner a new token)"
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = sub_commands(parser)
    create = leaf(commands, "create", "mint a service token for an owner (prints it)", create_token)
    create.add_argument("owner", help="the service's name, e.g. gradebook")
    revoke = leaf(commands, "revoke", "revoke every token of an owner", revoke_tokens)
    revoke.add_argument("owner", help="the owner whose tokens end")
