"""Operator commands that talk to a running relay's REST API and print readable tables.

``relay deliveries list|show`` and ``relay districts list``. Two top-level commands need two
entries in ``relay.cli``'s command tuple, so :mod:`relay.cli.deliveries` and
:mod:`relay.cli.districts` are three-line modules pointing here; everything else (the API
client, token lookup, tables, the sub-commands) lives in this module.

Connection: ``--api`` (default ``$RELAY_API_URL``, else http://127.0.0.1:8000); the token is
``--token``, else ``$RELAY_ADMIN_TOKEN``, else the admin token ``relay run`` stored in the data
dir (``.relay/admin_token``). That file is only read, never created: a freshly generated token
would not be the one the server knows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import httpx

from relay._exceptions import OperatorError
from relay.settings import get_settings

DEFAULT_API = "http://127.0.0.1:8000"
PAGE_MAX = 500
Action = Callable[["ApiClient", argparse.Namespace], int]


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=body)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise OperatorError(
                f"cannot reach the relay API at {self.base_url} ({type(exc).__name__}: {exc}); "
                "is `relay serve` running? Point --api or RELAY_API_URL at it"
            ) from None
        if response.status_code == 401:
            raise OperatorError(
                f"the API at {self.base_url} refused the token (401 {_message(response)}); "
                "pass --token, set RELAY_ADMIN_TOKEN, or run where .relay/admin_token is"
            )
        if response.status_code >= 400:
            raise OperatorError(f"{response.status_code}: {_message(response)}")
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise OperatorError(
                f"{self.base_url}{path} did not answer JSON; is --api a relay API?"
            ) from None

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params)

    def collect(
        self, path: str, params: dict[str, Any], limit: int | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` items (all when None) following cursors; and whether more exist."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            size = PAGE_MAX if limit is None else min(PAGE_MAX, limit - len(items))
            page = self.get(path, params | {"limit": size, "cursor": cursor})
            items += page["data"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items, False
            if limit is not None and len(items) >= limit:
                return items, True


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or "error"


def resolve_token(explicit: str | None) -> str:
    if explicit:
        return explicit
    settings = get_settings()
    if settings.admin_token:
        return settings.admin_token
    path = settings.data_dir / "admin_token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if not token:
        raise OperatorError(
            f"no API token: pass --token, set RELAY_ADMIN_TOKEN, or run where {path} exists"
        )
    return token


# ---- output -------------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()
) -> str:
    """Columns padded to their widest cell; ``right`` holds the right-aligned column indexes."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def when(value: str | None) -> str:
    """An API timestamp as ``2024-05-01 12:00:03`` (UTC, as every API timestamp is)."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def cell(value: Any, width: int = 60) -> str:
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


# ---- deliveries ---------------------------------------------------------------------------


def deliveries_list(api: ApiClient, args: argparse.Namespace) -> int:
    params = {
        "status": args.status,
        "subscription_id": args.subscription,
        "event_type": args.event_type,
        "since": args.since,
        "until": args.until,
    }
    items, more = api.collect("/v1/deliveries", params, args.limit)
    if args.json:
        return _emit(args, items, "")
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


def deliveries_show(api: ApiClient, args: argparse.Namespace) -> int:
    d = api.get(f"/v1/deliveries/{args.id}")
    if args.json:
        return _emit(args, d, "")
    fields = [
        ("delivery", str(d["id"])),
        ("status", d["status"]),
        ("subscription", d["subscription_id"]),
        ("event", f"{d['event_id']} ({d['event_type']})"),
        ("created", when(d["created_at"]) + " UTC"),
        ("next attempt", when(d["next_attempt_at"])),
        ("last status", cell(d["last_status_code"])),
        ("attempts", str(len(d["attempts"]))),
    ]
    print("\n".join(f"{name + ':':<14}{value}" for name, value in fields))
    if d["attempts"]:
        rows = [
            (
                str(n),
                when(a["attempted_at"]),
                cell(a["status_code"]),
                f"{a['duration_ms']} ms",
                cell(a["error"], 40),
                cell(a["response_excerpt"], 40),
            )
            for n, a in enumerate(d["attempts"], 1)
        ]
        headers = ("#", "ATTEMPTED (UTC)", "CODE", "DURATION", "ERROR", "RESPONSE")
        print("\n" + table(headers, rows, right=frozenset({0, 2, 3})))
    return 0


def deliveries_retry(api: ApiClient, args: argparse.Namespace) -> int:
    accepted = api.request("POST", f"/v1/deliveries/{args.id}/retry")
    if args.json:
        return _emit(args, accepted, "")
    print(
        f"delivery {accepted['id']}: {accepted['status']}, a manual attempt is queued "
        "(see it with: relay deliveries show " + str(accepted["id"]) + ")"
    )
    return 0


# ---- subscriptions ------------------------------------------------------------------------


def subscriptions_replay(api: ApiClient, args: argparse.Namespace) -> int:
    window = {"since": args.since} | ({"until": args.until} if args.until else {})
    accepted = api.request("POST", f"/v1/subscriptions/{args.id}/replay", body=window)
    if args.json:
        return _emit(args, accepted, "")
    print(
        f"subscription {args.id}: {accepted['requeued']} stored events will be sent again "
        f"(follow them with: relay deliveries list --subscription {args.id})"
    )
    return 0


# ---- districts ----------------------------------------------------------------------------


def districts_list(api: ApiClient, args: argparse.Namespace) -> int:
    items, _ = api.collect("/v1/districts", {}, None)
    if args.json:
        return _emit(args, items, "")
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


# ---- parsers ------------------------------------------------------------------------------


def _leaf(commands: Any, name: str, help: str, action: Action) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    parser.add_argument(
        "--api", default=None, help=f"API base URL (default $RELAY_API_URL or {DEFAULT_API})"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token (default $RELAY_ADMIN_TOKEN, then the admin token in the data dir)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead")
    parser.set_defaults(operator_action=action)
    return parser


def add_deliveries_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    listing = _leaf(commands, "list", "list deliveries, newest first", deliveries_list)
    listing.add_argument("--status", help="pending, retrying, succeeded, failed, cancelled")
    listing.add_argument("--subscription", metavar="ID", help="one subscription's deliveries")
    listing.add_argument("--event-type", metavar="TYPE", help="e.g. users.updated")
    listing.add_argument("--since", metavar="TIME", help="ISO 8601 (UTC when no offset)")
    listing.add_argument("--until", metavar="TIME", help="ISO 8601 (UTC when no offset)")
    listing.add_argument("--limit", type=_positive, default=50, help="rows to show (default 50)")
    show = _leaf(commands, "show", "show a delivery and its attempts", deliveries_show)
    show.add_argument("id", help="delivery id")
    retry = _leaf(
        commands, "retry", "send a delivery again now (a manual attempt)", deliveries_retry
    )
    retry.add_argument("id", help="delivery id")


def add_subscriptions_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    replay = _leaf(
        commands,
        "replay",
        "send a subscription's matching stored events of a time window again",
        subscriptions_replay,
    )
    replay.add_argument("id", help="subscription id")
    replay.add_argument("--since", required=True, metavar="TIME", help="ISO 8601 with an offset")
    replay.add_argument("--until", metavar="TIME", help="ISO 8601 with an offset (default now)")


def add_districts_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    _leaf(commands, "list", "list districts and how each is doing (admin)", districts_list)


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {raw!r}")
    return int(raw)


def main(args: argparse.Namespace) -> int:
    action: Action = args.operator_action
    api_url = args.api or os.environ.get("RELAY_API_URL") or DEFAULT_API
    try:
        api = ApiClient(api_url, resolve_token(args.token))
        try:
            return action(api, args)
        finally:
            api.close()
    except OperatorError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
