"""What the operator commands share: they talk to a running relay's REST API and print
readable tables (or the API's JSON with ``--json``).

The commands themselves are in :mod:`relay.cli.deliveries`, :mod:`relay.cli.subscriptions`,
:mod:`relay.cli.districts` and :mod:`relay.cli.tokens`; each sub-command is a :func:`leaf`
whose action gets an :class:`ApiClient` and the parsed arguments. This module has the client,
the token lookup, the table helpers and :func:`main`.

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


def emit(args: argparse.Namespace, data: Any, text: str) -> int:
    """Print ``text``, or the API's ``data`` as JSON under ``--json``."""
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    """``name:  value`` lines, the values aligned."""
    width = max(len(name) for name, _ in pairs) + 2
    return "\n".join(f"{name + ':':<{width}}{value}" for name, value in pairs)


# ---- parsers ------------------------------------------------------------------------------


def leaf(commands: Any, name: str, help: str, action: Action) -> argparse.ArgumentParser:
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


def sub_commands(parser: argparse.ArgumentParser) -> Any:
    return parser.add_subparsers(dest="operator_command", required=True, metavar="ACTION")


def positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {raw!r}")
    return int(raw)


def name_list(raw: str) -> list[str]:
    """``users,sections`` as a list; an empty string is the empty list (clears a filter)."""
    return [item.strip() for item in raw.split(",") if item.strip()]


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
