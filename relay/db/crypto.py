"""District tokens and signing secrets, encrypted at rest.

A database dump, a backup or a read replica should not hand out every district's Clever
token and every subscription's signing secret. The columns that hold them are
:class:`Encrypted`: Fernet (``cryptography``) with the keys of ``RELAY_ENCRYPTION_KEY``, a
comma list where the first key encrypts and every key decrypts, so a key is rotated by
putting a new one first, running ``relay keys reencrypt``, then dropping the old one.

Stored values carry a ``fernet:`` prefix; a value without it is plain text from before
encryption (read as it is, and encrypted by ``relay keys reencrypt``).

The keyring is the process's (set once at start-up by ``relay run``, ``relay serve``, the
worker), because a column type cannot reach per-request state; using an encrypted column
before :func:`use` is a programming error, said as such.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from relay._exceptions import ConfigError

PREFIX = "fernet:"
ENV = "RELAY_ENCRYPTION_KEY"


def generate_key() -> str:
    return Fernet.generate_key().decode()


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys decrypts."""


class Keyring:
    """The configured Fernet keys: the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError(f"{ENV}: no key given")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError):
                raise ConfigError(
                    f"{ENV}: key {position} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes; 'relay keys new' prints one)"
                ) from None
        self._primary = fernets[0]
        self._all = MultiFernet(fernets)
        # a subscription's secret is read for every attempt: decrypt each value once
        self.decrypt = functools.lru_cache(maxsize=8192)(self._decrypt)

    @classmethod
    def parse(cls, value: str) -> Keyring:
        return cls([key for key in value.split(",") if key.strip()])

    def encrypt(self, text: str) -> str:
        return PREFIX + self._primary.encrypt(text.encode()).decode()

    def _decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption at rest
        try:
            return self._all.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                f"a stored secret does not decrypt with any key in {ENV} "
                "(was a key dropped before 'relay keys reencrypt' ran?)"
            ) from None

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is encrypted with the first key (nothing to re-encrypt)."""
        if not stored.startswith(PREFIX):
            return False
        try:
            self._primary.decrypt(stored.removeprefix(PREFIX).encode())
        except InvalidToken:
            return False
        return True


_keyring: Keyring | None = None


def use(keyring: Keyring) -> None:
    """Make ``keyring`` the process's keyring (the processes call this at start-up)."""
    global _keyring
    _keyring = keyring


def keyring() -> Keyring:
    if _keyring is None:
        raise RuntimeError("relay.db.crypto.use() was not called: no encryption keyring")
    return _keyring


class Encrypted(TypeDecorator[str]):
    """Text encrypted with the process's keyring on the way in, decrypted on the way out."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else keyring().encrypt(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else keyring().decrypt(str(value))


#: The encrypted columns, as (table, key column, secret columns).
ENCRYPTED_COLUMNS = (
    ("districts", "id", ("token",)),
    ("subscriptions", "id", ("secret", "previous_secret")),
)


async def reencrypt(engine: AsyncEngine, ring: Keyring) -> int:
    """Encrypt with ``ring``'s first key every stored secret that is not already (plain text
    from before encryption, or an older key's); returns how many values were rewritten. One
    transaction per table: an interrupted run leaves every value readable, and running again
    finishes it."""
    rewritten = 0
    for table, key, columns in ENCRYPTED_COLUMNS:
        async with engine.begin() as conn:
            names = ", ".join(columns)
            rows = (await conn.execute(text(f"SELECT {key}, {names} FROM {table}"))).all()  # noqa: S608
            for row in rows:
                changes = {
                    column: ring.encrypt(ring.decrypt(value))
                    for column, value in zip(columns, row[1:], strict=True)
                    if value is not None and not ring.is_current(value)
                }
                if changes:
                    assignments = ", ".join(f"{c} = :{c}" for c in changes)
                    await conn.execute(
                        text(f"UPDATE {table} SET {assignments} WHERE {key} = :key"),  # noqa: S608
                        {**changes, "key": row[0]},
                    )
                    rewritten += len(changes)
    return rewritten
