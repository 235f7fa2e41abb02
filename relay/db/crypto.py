"""District tokens and signing secrets, encrypted at rest.

A database dump, a backup or a read replica should not hand out every district's Clever
token and every subscription's signing secret. The columns that hold them are
:class:`Encrypted`: Fernet (``cryptography``) with the keys of ``RELAY_ENCRYPTION_KEY``, a
comma list where the first key encrypts and every key decrypts, so a key is rotated by
putting a new one first, running ``relay keys reencrypt``, then dropping the old one.

Stored values carry a ``fernet:`` prefix; a value without it is plain text from before
encryption (read as it is, and encrypted by ``relay keys reencrypt``).

A value none of the keys decrypts (written by a process whose first key this one lacks: a
mistyped key, a rotation that has not reached every process) is that row's problem only. The
ORM never decrypts a secret it was not asked for (``relay.db.models``: the columns are
deferred), so such a row is listed, changed and deleted like any other; code that needs the
secret gets :class:`~relay._exceptions.SecretUnreadable` and makes it the row's state (a
subscription disabled, a district in ``error``). ``relay keys reencrypt`` reports and skips
it, and every process samples what is stored at start-up (:func:`check_keys`) and says when
its keys do not read it.

The keyring is the process's (set once at start-up by ``relay run``, ``relay serve``, the
worker), because a column type cannot reach per-request state; using an encrypted column
before :func:`use` is a programming error, said as such.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text, text, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from relay._exceptions import ConfigError, SecretUnreadable
from relay.db.engine import Database

__all__ = [
    "ENCRYPTED_COLUMNS",
    "ENV",
    "PREFIX",
    "Encrypted",
    "KeyCheck",
    "Keyring",
    "Reencryption",
    "SecretUnreadable",
    "Unreadable",
    "as_stored",
    "check_keys",
    "generate_key",
    "keyring",
    "reencrypt",
    "sample_stored",
    "use",
]

PREFIX = "fernet:"
ENV = "RELAY_ENCRYPTION_KEY"

logger = logging.getLogger("relay.secrets")


def generate_key() -> str:
    return Fernet.generate_key().decode()


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
        self._fernets = fernets
        self._primary = fernets[0]
        self._all = MultiFernet(fernets)
        # a subscription's secret is read for every attempt: decrypt each value once (a
        # value that does not decrypt raises, and is not cached)
        self.decrypt = functools.lru_cache(maxsize=8192)(self._decrypt)

    @classmethod
    def parse(cls, value: str) -> Keyring:
        return cls([key for key in value.split(",") if key.strip()])

    @property
    def size(self) -> int:
        return len(self._fernets)

    def encrypt(self, text: str) -> str:
        return PREFIX + self._primary.encrypt(text.encode()).decode()

    def _decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption at rest
        try:
            return self._all.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                f"a stored secret does not decrypt with any key in {ENV} (written by a "
                "process with a key this one lacks, or under a key dropped before 'relay "
                "keys reencrypt' ran)"
            ) from None

    def readable(self, stored: str) -> bool:
        """Whether ``stored`` decrypts with one of the keys (or is plain text)."""
        try:
            self.decrypt(stored)
        except SecretUnreadable:
            return False
        return True

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is encrypted with the first key (nothing to re-encrypt)."""
        if not stored.startswith(PREFIX):
            return False
        try:
            self._primary.decrypt(stored.removeprefix(PREFIX).encode())
        except InvalidToken:
            return False
        return True


def written_at(stored: str) -> datetime | None:
    """When a Fernet value was encrypted: its token carries the time in clear (bytes 1-8
    after the version byte), so even a value no key here reads can be dated, to match it to
    a deploy. None for plain text or a malformed value."""
    if not stored.startswith(PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(stored.removeprefix(PREFIX))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 9 or raw[0] != 0x80:
        return None
    return datetime.fromtimestamp(int.from_bytes(raw[1:9], "big"), UTC)


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


def as_stored(column: Any) -> ColumnElement[str]:
    """An encrypted column selected as it is stored, not decrypted: for code that decides
    later whether (and when) it needs the value, so that a value no key reads is its row's
    problem, not the whole query's (``Keyring.decrypt`` it then)."""
    return type_coerce(column, Text)


#: The encrypted columns, as (table, key column, secret columns).
ENCRYPTED_COLUMNS = (
    ("districts", "id", ("token",)),
    ("subscriptions", "id", ("secret", "previous_secret")),
)
_SINGULAR = {"districts": "district", "subscriptions": "subscription"}
#: rows read, then rewritten in one short write transaction, at a time
REENCRYPT_BATCH = 500


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored value no configured key decrypts: where it is (never what it is)."""

    table: str
    key: str
    column: str

    def __str__(self) -> str:
        return f"{_SINGULAR.get(self.table, self.table)} {self.key} ({self.column})"


@dataclass
class Reencryption:
    """What ``relay keys reencrypt`` did."""

    #: values now encrypted with the first key
    rewritten: int = 0
    #: values changed by someone else between the read and the rewrite (a rotate-secret, a
    #: new token): left as that write left them (a later run re-encrypts them if need be)
    changed_meanwhile: int = 0
    #: values no key decrypts, left as they are
    unreadable: list[Unreadable] = field(default_factory=list)


async def reencrypt(db: Database, ring: Keyring) -> Reencryption:
    """Encrypt with ``ring``'s first key every stored secret that is not already (plain text
    from before encryption, or an older key's).

    Each value is rewritten as a compare-and-set on the value read (``… WHERE id = :id AND
    secret = :read``), so a concurrent write (``rotate-secret``, a PATCHed or discovered
    token) always wins: the re-encryption of the value it replaced matches no row. Values no
    key decrypts are skipped and reported, never fatal. Rows are read a batch at a time and
    each batch is rewritten in one short write transaction: an interrupted run leaves every
    value readable, and running again finishes it."""
    report = Reencryption()
    for table, key, columns in ENCRYPTED_COLUMNS:
        names = ", ".join(columns)
        after: str | None = None
        while True:
            where = "" if after is None else f"WHERE {key} > :after "
            query = text(
                f"SELECT {key}, {names} FROM {table} {where}ORDER BY {key} LIMIT :n"  # noqa: S608
            )
            async with db.read() as session:
                conn = await session.connection()
                rows = (await conn.execute(query, {"after": after, "n": REENCRYPT_BATCH})).all()
            if not rows:
                break
            after = str(rows[-1][0])
            changes: list[tuple[str, str, str, str]] = []  # (column, key, read, rewritten)
            for row in rows:
                for column, value in zip(columns, row[1:], strict=True):
                    if value is None or ring.is_current(value):
                        continue
                    try:
                        plain = ring.decrypt(value)
                    except SecretUnreadable:
                        report.unreadable.append(Unreadable(table, str(row[0]), column))
                        continue
                    changes.append((column, str(row[0]), value, ring.encrypt(plain)))
            if changes:
                async with db.write() as session:
                    conn = await session.connection()
                    for column, row_key, read, rewritten in changes:
                        result = await conn.execute(
                            text(
                                f"UPDATE {table} SET {column} = :new "  # noqa: S608
                                f"WHERE {key} = :key AND {column} = :read"
                            ),
                            {"new": rewritten, "key": row_key, "read": read},
                        )
                        if result.rowcount == 1:
                            report.rewritten += 1
                        else:
                            report.changed_meanwhile += 1
            if len(rows) < REENCRYPT_BATCH:
                break
    return report


#: rows sampled per table at start-up: the most recently written (a process with another
#: key writes new rows), enough to notice, few enough to cost nothing
CHECK_SAMPLE = 50
#: a start-up check waits at most this long for the database (it is only advice)
CHECK_TIMEOUT = 10.0


@dataclass(frozen=True)
class KeyCheck:
    """How a process's keys fare on a sample of what is stored."""

    keys: int
    sampled: int
    unreadable: list[Unreadable]
    #: when the newest of the unreadable values was written (Fernet dates its tokens in clear)
    newest_unreadable: datetime | None = None

    def describe(self) -> str | None:
        """One line for the log, naming the rows (never a value or a key); None: all read."""
        if not self.unreadable:
            return None
        shown = ", ".join(str(u) for u in self.unreadable[:5])
        if len(self.unreadable) > 5:
            shown += f" and {len(self.unreadable) - 5} more"
        when = (
            ""
            if self.newest_unreadable is None
            else f"; the newest written {self.newest_unreadable.isoformat(timespec='seconds')}"
        )
        return (
            f"{ENV}: {len(self.unreadable)} of the {self.sampled} stored secrets sampled do not "
            f"decrypt with any of this process's {self.keys} key(s) ({shown}{when}). The key "
            "they were written with is missing here: most likely the first key of another "
            f"relay process's {ENV} (a mistyped key, or a rotation that has not reached this "
            f"process). Add that key to {ENV} here (after the first), or give those rows new "
            "secrets (rotate-secret or PATCH secret; PATCH the district's token). Until then "
            "those subscriptions are disabled and those districts in error; nothing else stops."
        )


async def sample_stored(
    engine: AsyncEngine, ring: Keyring, per_table: int = CHECK_SAMPLE
) -> KeyCheck:
    """Try ``ring`` on the most recently written encrypted values of each table."""
    sampled = 0
    unreadable: list[Unreadable] = []
    newest: datetime | None = None
    async with engine.connect() as conn:
        for table, key, columns in ENCRYPTED_COLUMNS:
            names = ", ".join(columns)
            rows = await conn.execute(
                text(f"SELECT {key}, {names} FROM {table} ORDER BY updated_at DESC LIMIT :n"),  # noqa: S608
                {"n": per_table},
            )
            for row in rows.all():
                for column, value in zip(columns, row[1:], strict=True):
                    if value is None:
                        continue
                    sampled += 1
                    if not ring.readable(value):
                        unreadable.append(Unreadable(table, str(row[0]), column))
                        at = written_at(value)
                        if at is not None and (newest is None or at > newest):
                            newest = at
    return KeyCheck(ring.size, sampled, unreadable, newest)


async def check_keys(engine: AsyncEngine, component: str) -> KeyCheck | None:
    """At a process's start-up: do its keys read what is stored? Logs one warning naming
    the rows whose values they do not read (the start goes on: a row it cannot read is that
    row's problem), DEBUG otherwise; a check that cannot run (the database is away) is a
    warning too, and None."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            check = await sample_stored(engine, keyring())
    except Exception as exc:  # only advice: never what stops a process from starting
        logger.warning(
            f"could not check the stored secrets against {ENV}",
            extra={"component": component, "error": type(exc).__name__},
        )
        return None
    problem = check.describe()
    if problem is None:
        logger.debug(
            f"{ENV} reads the stored secrets sampled",
            extra={"component": component, "sampled": check.sampled, "keys": check.keys},
        )
    else:
        logger.warning(
            problem,
            extra={"component": component, "unreadable": len(check.unreadable), "keys": check.keys},
        )
    return check
