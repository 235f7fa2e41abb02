"""``relay keys``: the secrets every process of a deployment shares.

``relay keys new`` prints a fresh set as environment lines (the admin token, the signing key,
the encryption key); ``relay keys reencrypt`` encrypts every stored district token and
signing secret with the first key of ``RELAY_ENCRYPTION_KEY`` (after a key rotation, or once
after upgrading from a relay that stored them in plain text).
"""

from __future__ import annotations

import argparse
import asyncio

from relay.db import Database
from relay.db.crypto import reencrypt
from relay.secrets import ALL, resolve_keyring
from relay.settings import get_settings

NAME = "keys"
HELP = "print a fresh set of secrets (new), or re-encrypt stored secrets (reencrypt)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "new", help="print new RELAY_ADMIN_TOKEN, RELAY_SECRET_KEY, RELAY_ENCRYPTION_KEY"
    )
    actions.add_parser(
        "reencrypt",
        help="encrypt every stored secret with the first key of RELAY_ENCRYPTION_KEY",
    )


async def _reencrypt() -> int:
    settings = get_settings()
    db = Database(settings.database_url)
    try:
        return await reencrypt(db.engine, resolve_keyring(settings))
    finally:
        await db.dispose()


def main(args: argparse.Namespace) -> int:
    if args.action == "new":
        for secret in ALL:
            print(f"{secret.env}={secret.make()}")
        return 0
    count = asyncio.run(_reencrypt())
    print(f"re-encrypted {count} stored secret{'' if count == 1 else 's'} with the first key")
    return 0
