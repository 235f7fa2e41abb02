"""``relay serve``: the API alone (stateless; run as many as you like behind a balancer)."""

from __future__ import annotations

import argparse
import os

import uvicorn

from relay.api.app import create_app
from relay.queue.embedded import configured_redis_url
from relay.secrets import resolve_secrets
from relay.settings import get_settings

NAME = "serve"
HELP = "run the REST API (default 127.0.0.1:8000; PORT is honoured)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    app = create_app(settings, resolve_secrets(settings), redis_url=configured_redis_url(settings))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0
