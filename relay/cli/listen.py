"""``relay listen``: a small receiver that verifies signatures and prints each delivery —
what ``stripe listen`` is to Stripe.

Without ``--secret`` it registers a temporary subscription pointing at itself through the
API (admin token from ``--token``, ``RELAY_ADMIN_TOKEN`` or the data dir), uses that
subscription's secret, and deletes the subscription when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.cli.serving import make_server, stop_on_signals
from relay.delivery.signing import parse_secret, verify
from relay.secrets import admin_token
from relay.settings import get_settings

NAME = "listen"
HELP = "receive webhooks locally, verify their signatures and print them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--secret", help="whsec_… of an existing subscription pointing here")
    parser.add_argument(
        "--api", default=os.environ.get("RELAY_API_URL", "http://127.0.0.1:8000"),
        help="the relay API, to register a temporary subscription (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--token", help="admin or service token (default: the data dir's)")
    parser.add_argument(
        "--record-types", "--types", dest="record_types", default="",
        help="comma list, e.g. users,sections; 'relay' for the relay's operational events",
    )  # fmt: skip
    parser.add_argument("--schools", default="", help="comma list of school ids")


def describe(event: dict[str, Any]) -> str:
    record = event.get("data", {}).get("object", {}) if isinstance(event.get("data"), dict) else {}
    moved = "previous_attributes" in event.get("data", {})
    kind = str(event.get("type", "?"))
    if kind.startswith("relay.") and isinstance(record, dict):  # an operational event
        why = record.get("disabled_reason") or record.get("last_error") or record.get("status")
        return f"{kind:<20} about={record.get('id', '?')}" + (f": {why}" if why else "")
    return (
        f"{event.get('type', '?'):<20} district={event.get('district')} "
        f"record={record.get('id', '?')}" + (" (with previous_attributes)" if moved else "")
    )


def create_listener(secret: str, out: Any = sys.stdout) -> Starlette:
    async def receive(request: Request) -> Response:
        body = await request.body()
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        msg_id = request.headers.get("webhook-id", "-")
        if not verify(secret, request.headers, body):
            print(f"{stamp} {msg_id} BAD SIGNATURE — refused (401)", file=out, flush=True)
            return Response(status_code=401)
        try:
            event = json.loads(body)
        except ValueError:
            event = {}
        print(f"{stamp} {msg_id} ✓ {describe(event)}", file=out, flush=True)
        return Response(status_code=204)

    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])


class TemporarySubscription:
    def __init__(self, api: str, token: str, url: str, filters: dict[str, list[str]]) -> None:
        self.client = httpx.Client(
            base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        body = {"url": url, "description": "relay listen (temporary)", **filters}
        try:
            response = self.client.post("/v1/subscriptions", json=body)
        except httpx.HTTPError as exc:
            raise SystemExit(f"relay listen: cannot reach the API at {api}: {exc}") from None
        if response.status_code != 201:
            raise SystemExit(f"relay listen: the API refused the subscription: {response.text}")
        created = response.json()
        self.id: str = created["id"]
        self.secret: str = created["secret"]

    def delete(self) -> None:
        try:
            self.client.delete(f"/v1/subscriptions/{self.id}")
        except httpx.HTTPError:
            print(f"relay listen: could not delete subscription {self.id}", file=sys.stderr)
        self.client.close()


async def _serve(app: Starlette, host: str, port: int) -> None:
    stop = stop_on_signals()
    server = make_server(app, host, port)
    task = asyncio.create_task(server.serve())
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    server.should_exit = True
    await task


def main(args: argparse.Namespace) -> int:
    temporary = None
    if args.secret:
        try:
            parse_secret(args.secret)
        except ValueError as exc:
            print(f"relay listen: --secret: {exc}", file=sys.stderr)
            return 2
        secret = args.secret
    else:
        token = args.token or admin_token(get_settings())
        filters = {
            key: [v.strip() for v in value.split(",") if v.strip()]
            for key, value in (("record_types", args.record_types), ("schools", args.schools))
            if value
        }
        url = f"http://{args.host}:{args.port}/"
        temporary = TemporarySubscription(args.api, token, url, filters)
        secret = temporary.secret
        print(f"relay listen: subscribed {temporary.id} → {url} (removed when you stop)")
    print(f"relay listen: waiting for webhooks on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    try:
        asyncio.run(_serve(create_listener(secret), args.host, args.port))
    finally:
        if temporary is not None:
            temporary.delete()
    return 0
