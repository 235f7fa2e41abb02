"""``relay keys``: the secrets every process of a deployment shares.

``relay keys new`` prints a fresh set as environment lines (the admin token, the signing key,
the encryption key); ``relay keys reencrypt`` encrypts every stored district token and
signing secret with the first key of ``RELAY_ENCRYPTION_KEY`` (after a key rotation, or once
after upgrading from a relay that stored them in plain text).

A value no key decrypts is skipped and named (never shown), and the command exits 1 after
re-encrypting everything else: the old key must not be dropped on the strength of such a run,
as those values may be readable only with a key missing from this run's list.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from relay.db import Database
from relay.db.crypto import ENV, Reencryption, reencrypt
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


async def _reencrypt() -> Reencryption:
    settings = get_settings()
    db = Database(settings.database_url)
    try:
        return await reencrypt(db, resolve_keyring(settings))
    finally:
        await db.dispose()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report(done: Reencryption) -> list[str]:
    """What a re-encryption did, in lines: the count, what changed meanwhile, and each value
    skipped because no key decrypts it (where it is, never what)."""
    lines = [f"re-encrypted {_plural(done.rewritten, 'stored secret')} with the first key"]
    if done.changed_meanwhile:
        lines.append(
            f"{_plural(done.changed_meanwhile, 'value')} changed meanwhile (a rotation, a new "
            "token) and kept what that write left (run again if it was under an older key)"
        )
    if done.unreadable:
        lines.append(
            f"skipped {_plural(len(done.unreadable), 'value')} that no key in {ENV} decrypts: "
            + ", ".join(str(u) for u in done.unreadable)
        )
        lines.append(
            "  run again with the key they were written with in the list, or give them new "
            "secrets (rotate-secret or PATCH secret; PATCH the district's token); do not drop "
            "a key on the strength of this run"
        )
    return lines


def main(args: argparse.Namespace) -> int:
    if args.action == "new":
        for secret in ALL:
            print(f"{secret.env}={secret.make()}")
        return 0
    done = asyncio.run(_reencrypt())
    lines = report(done)
    print(lines[0])
    for line in lines[1:]:
        print(line, file=sys.stderr if done.unreadable else sys.stdout)
    return 1 if done.unreadable else 0
