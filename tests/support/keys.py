"""Secrets written under an encryption key the relay's processes do not have: what an API
replica with another ``RELAY_ENCRYPTION_KEY`` (a mistyped key, a rotation half rolled out)
writes, and what every other process must survive (issue 26)."""

from __future__ import annotations

from sqlalchemy import text

from relay.db import Database
from relay.db.crypto import Keyring

#: a Fernet key no relay process of the suite has (tests.support.config.ENCRYPTION_KEY is theirs)
OTHER_KEY = "5Fir1txu3Ju51P4rQ8QYqxY-0E_0xy8v0KBxGyuhdbY="


async def store_under_other_key(
    db: Database, table: str, row_id: str, column: str, plain: str, key: str = OTHER_KEY
) -> None:
    """Overwrite one encrypted value (``subscriptions.secret``, ``districts.token``…) of a row
    with ``plain`` encrypted under ``key``, as a process configured with that key writes it."""
    async with db.write() as session:
        conn = await session.connection()
        await conn.execute(
            text(f"UPDATE {table} SET {column} = :value WHERE id = :id"),
            {"value": Keyring([key]).encrypt(plain), "id": row_id},
        )


async def stored_value(db: Database, table: str, row_id: str, column: str) -> str | None:
    """An encrypted value as stored (the ciphertext, not decrypted)."""
    async with db.read() as session:
        conn = await session.connection()
        row = await conn.execute(
            text(f"SELECT {column} FROM {table} WHERE id = :id"),
            {"id": row_id},
        )
        value = row.scalar_one_or_none()
    return None if value is None else str(value)
