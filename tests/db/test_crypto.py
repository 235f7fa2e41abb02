"""District tokens and signing secrets are encrypted at rest, readable through key rotation,
and re-encrypted by ``relay keys reencrypt`` (``relay.db.crypto``); what no key decrypts is
reported and skipped, and a process's keys are checked against what is stored at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import undefer
from sqlmodel import select

from relay._exceptions import ConfigError
from relay.db import Database, crypto, utcnow
from relay.db.crypto import (
    Keyring,
    SecretUnreadable,
    check_keys,
    generate_key,
    reencrypt,
    sample_stored,
)
from relay.db.models import District, Subscription
from tests.support.config import ENCRYPTION_KEY
from tests.support.keys import store_under_other_key, stored_value
from tests.support.servers import free_port

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
    async with db.read() as session:  # the ORM loads a secret only when asked to
        district = await session.get(District, "d1", options=[undefer(District.token)])
        sub = (await session.exec(select(Subscription).options(undefer(Subscription.secret)))).one()
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
    assert (await reencrypt(db, Keyring([new, old]))).rewritten == 2
    assert (await reencrypt(db, Keyring([new, old]))).rewritten == 0  # nothing left to do
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
        district = await session.get(District, "d1", options=[undefer(District.token)])
    assert district is not None
    assert district.token == TOKEN
    assert (await reencrypt(db, Keyring.parse(ENCRYPTION_KEY))).rewritten == 1
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


async def test_reencrypt_skips_and_reports_what_no_key_decrypts(
    db: Database, keys: list[str]
) -> None:
    old, new = keys
    await _store(db)  # under the suite's key
    async with db.write() as session:
        session.add(
            Subscription(id="sub_lost", owner="team", url="http://example.com/", secret=SECRET)
        )
    await store_under_other_key(db, "subscriptions", "sub_lost", "secret", SECRET, key=old)
    ring = Keyring([new, ENCRYPTION_KEY])

    done = await reencrypt(db, ring)

    assert (done.rewritten, done.changed_meanwhile) == (2, 0)
    assert [str(u) for u in done.unreadable] == ["subscription sub_lost (secret)"]
    first = Keyring([new])  # the readable ones are under the new key now
    assert first.decrypt(await stored_value(db, "districts", "d1", "token") or "") == TOKEN
    async with db.read() as session:
        (sub_id,) = (
            await session.exec(select(Subscription.id).where(Subscription.id != "sub_lost"))
        ).all()
    assert first.decrypt(await stored_value(db, "subscriptions", sub_id, "secret") or "") == SECRET
    again = await reencrypt(db, ring)
    assert (again.rewritten, len(again.unreadable)) == (0, 1)


async def test_the_start_up_check_names_the_rows_and_never_a_key(
    db: Database, keys: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    other, _ = keys
    await _store(db)
    await store_under_other_key(db, "districts", "d1", "token", TOKEN, key=other)
    before = utcnow().replace(microsecond=0)

    check = await sample_stored(db.engine, Keyring.parse(ENCRYPTION_KEY))

    assert (check.keys, check.sampled) == (1, 2)
    assert [str(u) for u in check.unreadable] == ["district d1 (token)"]
    assert check.newest_unreadable is not None
    assert check.newest_unreadable >= before  # Fernet dates a value in clear: when it was written
    with caplog.at_level(logging.DEBUG, logger="relay.secrets"):
        assert await check_keys(db.engine, "worker") == check
    (line,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "district d1 (token)" in line.getMessage()
    assert "RELAY_ENCRYPTION_KEY" in line.getMessage()
    for secret in (other, ENCRYPTION_KEY, TOKEN, SECRET):
        assert secret not in caplog.text


async def test_a_start_up_check_that_cannot_run_says_so_and_lets_the_process_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/relay")
    with caplog.at_level(logging.WARNING, logger="relay.secrets"):
        assert await check_keys(nowhere.engine, "api") is None
    await nowhere.dispose()
    assert "could not check the stored secrets" in caplog.text


def test_written_at_reads_the_time_fernet_keeps_in_clear() -> None:
    at = crypto.written_at(Keyring([generate_key()]).encrypt("x"))
    assert at is not None
    assert abs((utcnow() - at).total_seconds()) < 5
    assert crypto.written_at("plain text from before encryption") is None
    assert crypto.written_at("fernet:not base64 at all!") is None
