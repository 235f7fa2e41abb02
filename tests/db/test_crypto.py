"""District tokens and signing secrets are encrypted at rest, readable through key rotation,
and re-encrypted by ``relay keys reencrypt`` (``relay.db.crypto``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlmodel import select

from relay._exceptions import ConfigError
from relay.db import Database, crypto
from relay.db.crypto import Keyring, SecretUnreadable, generate_key, reencrypt
from relay.db.models import District, Subscription
from tests.support.config import ENCRYPTION_KEY

TOKEN = "clever-district-token-0123456789"
SECRET = "whsec_" + "A" * 43 + "="


@pytest.fixture
def keys() -> Iterator[list[str]]:
    """Two fresh keys; the suite's keyring is put back afterwards."""
    yield [generate_key(), generate_key()]
    crypto.use(Keyring.parse(ENCRYPTION_KEY))


async def _store(db: Database) -> None:
    async with db.write() as session:
        session.add(District(id="d1", token=TOKEN))
        session.add(Subscription(owner="team", url="http://example.com/", secret=SECRET))


async def _raw(db: Database) -> tuple[str, str]:
    async with db.engine.connect() as conn:
        token = (await conn.execute(text("SELECT token FROM districts"))).scalar_one()
        secret = (await conn.execute(text("SELECT secret FROM subscriptions"))).scalar_one()
    return str(token), str(secret)


async def _read(db: Database) -> tuple[str, str]:
    async with db.read() as session:
        district = await session.get(District, "d1")
        sub = (await session.exec(select(Subscription))).one()
    assert district is not None
    assert sub is not None
    return district.token, sub.secret


async def test_tokens_and_secrets_are_stored_encrypted(db: Database) -> None:
    await _store(db)
    token, secret = await _raw(db)
    assert token.startswith("fernet:")
    assert secret.startswith("fernet:")
    assert TOKEN not in token
    assert SECRET not in secret
    assert await _read(db) == (TOKEN, SECRET)


async def test_key_rotation_then_reencrypt(db: Database, keys: list[str]) -> None:
    old, new = keys
    crypto.use(Keyring([old]))
    await _store(db)
    crypto.use(Keyring([new, old]))  # the new key first: it encrypts, both decrypt
    assert await _read(db) == (TOKEN, SECRET)
    assert await reencrypt(db.engine, Keyring([new, old])) == 2
    assert await reencrypt(db.engine, Keyring([new, old])) == 0  # nothing left to do
    crypto.use(Keyring([new]))  # the old key can go now
    assert await _read(db) == (TOKEN, SECRET)
    crypto.use(Keyring([old]))
    with pytest.raises(SecretUnreadable, match="RELAY_ENCRYPTION_KEY"):
        await _read(db)


async def test_plain_text_from_before_encryption_is_read_then_encrypted(db: Database) -> None:
    await _store(db)
    async with db.engine.begin() as conn:  # as a relay before encryption at rest wrote it
        await conn.execute(text("UPDATE districts SET token = :token"), {"token": TOKEN})
    async with db.read() as session:
        district = await session.get(District, "d1")
    assert district is not None
    assert district.token == TOKEN
    assert await reencrypt(db.engine, Keyring.parse(ENCRYPTION_KEY)) == 1
    async with db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token FROM districts"))).scalar_one()
    assert stored.startswith("fernet:")
    assert TOKEN not in stored


@pytest.mark.parametrize("value", ["", "not-a-key", generate_key() + ",short"])
def test_a_bad_key_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="RELAY_ENCRYPTION_KEY") as caught:
        Keyring.parse(value)
    assert "short" not in str(caught.value)
    assert "not-a-key" not in str(caught.value)
