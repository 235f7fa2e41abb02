"""``relay keys reencrypt`` as a real process: it skips and names what no key decrypts (and
exits 1 after re-encrypting the rest), and it never undoes a concurrent rotation (issue 26,
items 1 and 2).

The race: the API (a real server) rotates secrets and re-tokens districts while
``relay keys reencrypt`` runs again and again. The API is a replica that still encrypts with
the old key (``RELAY_ENCRYPTION_KEY=OLD,NEW``) and the re-encryption runs with ``NEW,OLD``, so
every rotation leaves a value to re-encrypt and the two keep meeting on the same rows.

Before the fix, a run read every row, then wrote back the old value re-encrypted: rotations the
API had answered went back to the secret before them (43 of 361 when it was found); on SQLite
the run failed outright ("database is locked": its read snapshot went stale under the
rotations)."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from relay.api.app import create_app
from relay.db import Database, crypto
from relay.db.crypto import Keyring, generate_key
from relay.db.models import Subscription
from relay.delivery.signing import generate_secret
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN, ENCRYPTION_KEY
from tests.support.keys import OTHER_KEY, store_under_other_key, stored_value
from tests.support.processes import RelayProcess
from tests.support.servers import serve

SUBSCRIPTIONS = 1000
DISTRICTS = 20
ROTATIONS = 300
RETOKENS = 60
ROTATORS = 6  # threads, each with its own share of the rows (so "last answered" is defined)
#: seconds between one thread's rotations: the rotations last ~6 s, several re-encryptions
PACE = 0.12


@pytest.fixture
def new_key() -> str:
    return generate_key()


def _reencrypt(settings: Settings, keys: str, log: Path) -> tuple[int, str]:
    """One ``relay keys reencrypt`` with ``RELAY_ENCRYPTION_KEY=keys``: exit code, output."""
    env = {"RELAY_DATABASE_URL": settings.database_url, "RELAY_ENCRYPTION_KEY": keys}
    process = RelayProcess(["keys", "reencrypt"], env, log)
    code = process.proc.wait(120)
    process.stop()
    return code, process.output()


@pytest.fixture
def admin(settings: Settings, new_key: str) -> Iterator[httpx.Client]:
    """An admin client of the API in a real server that encrypts with the suite's key
    (``ENCRYPTION_KEY``, the old one here) and reads ``new_key`` too."""
    runtime = RuntimeSecrets(
        admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key",
        encryption_key=f"{ENCRYPTION_KEY},{new_key}",
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with (
            serve(create_app(settings, runtime)) as server,
            httpx.Client(base_url=server.url, headers=headers, timeout=30) as client,
        ):
            yield client
    finally:  # the app made its keyring the process's: the suite's again
        crypto.use(Keyring.parse(ENCRYPTION_KEY))


def _subscribe(admin: httpx.Client, n: int) -> tuple[str, str]:
    created = admin.post("/v1/subscriptions", json={"url": f"http://127.0.0.1:9/{n}"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"]), str(created.json()["secret"])


async def test_reencrypt_skips_and_names_what_no_key_decrypts(
    settings: Settings, admin: httpx.Client, db: Database, new_key: str, tmp_path: Path
) -> None:
    readable, _ = _subscribe(admin, 1)
    lost, _ = _subscribe(admin, 2)
    assert admin.post("/v1/districts", json={"id": "d1", "token": "t1"}).status_code == 201
    await store_under_other_key(db, "subscriptions", lost, "secret", generate_secret())
    before = await stored_value(db, "subscriptions", lost, "secret")

    code, output = _reencrypt(settings, f"{new_key},{ENCRYPTION_KEY}", tmp_path / "keys.log")

    assert code == 1, output  # not all is under the first key: don't drop the old one yet
    assert "re-encrypted 2 stored secrets with the first key" in output
    skipped = "skipped 1 value that no key in RELAY_ENCRYPTION_KEY decrypts"
    assert f"{skipped}: subscription {lost} (secret)" in output
    assert "Traceback" not in output
    for key in (new_key, ENCRYPTION_KEY, OTHER_KEY):
        assert key not in output
    first = Keyring([new_key])
    assert first.is_current(await stored_value(db, "subscriptions", readable, "secret") or "")
    assert first.is_current(await stored_value(db, "districts", "d1", "token") or "")
    assert await stored_value(db, "subscriptions", lost, "secret") == before  # left as it was


async def test_rotations_racing_reencrypt_all_keep_what_the_api_answered(
    settings: Settings, admin: httpx.Client, db: Database, new_key: str, tmp_path: Path
) -> None:
    # every secret each subscription had, the last one the API's answer: many rows, so that a
    # re-encryption's pass over them is long enough for rotations to land in it
    secrets: dict[str, list[str]] = {}
    async with db.write() as session:
        for n in range(SUBSCRIPTIONS):
            sub = Subscription(
                owner="team", url=f"http://127.0.0.1:9/{n}", secret=generate_secret()
            )
            session.add(sub)
            secrets[sub.id] = [sub.secret]
    tokens: dict[str, str] = {}  # the last token each district was given
    for n in range(DISTRICTS):
        body = {"id": f"d{n}", "token": f"token-{n}-0"}
        assert admin.post("/v1/districts", json=body).status_code == 201
        tokens[body["id"]] = body["token"]

    keys = f"{new_key},{ENCRYPTION_KEY}"
    done = threading.Event()
    runs: list[tuple[int, str, bool]] = []  # (exit code, output, started while rotating)

    def reencrypt_until_done() -> None:
        for n in itertools.count():
            if done.is_set():
                return
            code, output = _reencrypt(settings, keys, tmp_path / f"keys-{n}.log")
            runs.append((code, output, True))

    def rotate(share: list[str], count: int) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=admin.base_url, headers=headers, timeout=30) as client:
            for sub_id in itertools.islice(itertools.cycle(share), count):
                answer = client.post(f"/v1/subscriptions/{sub_id}/rotate-secret")
                assert answer.status_code == 200, answer.text
                secrets[sub_id].append(answer.json()["secret"])
                time.sleep(PACE)

    def retoken(share: list[str], count: int) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=admin.base_url, headers=headers, timeout=30) as client:
            for n, district_id in enumerate(itertools.islice(itertools.cycle(share), count)):
                token = f"token-{district_id}-{n + 1}"
                answer = client.patch(f"/v1/districts/{district_id}", json={"token": token})
                assert answer.status_code == 200, answer.text
                tokens[district_id] = token
                time.sleep(PACE * ROTATIONS / RETOKENS / ROTATORS)

    # in no particular order: a rotation lands ahead of a re-encryption's pass as often as
    # behind it (in the order they were written, a pass would always have passed it already)
    ids = random.Random(26).sample(list(secrets), len(secrets))
    looping = threading.Thread(target=reencrypt_until_done, daemon=True)
    looping.start()
    started = time.monotonic()
    with ThreadPoolExecutor(ROTATORS + 1) as pool:
        work = [
            pool.submit(rotate, ids[k::ROTATORS], ROTATIONS // ROTATORS) for k in range(ROTATORS)
        ]
        work.append(pool.submit(retoken, list(tokens), RETOKENS))
        for future in work:
            await asyncio.wrap_future(future)  # raises what a thread raised
    rotating_for = time.monotonic() - started
    overlapped = len(runs) + 1  # the one in progress when the rotations ended
    done.set()
    await asyncio.to_thread(looping.join, 180)
    final = _reencrypt(settings, keys, tmp_path / "keys-final.log")
    print(
        f"\n{ROTATIONS} rotations and {RETOKENS} new tokens in {rotating_for:.1f}s, "
        f"{overlapped} re-encryptions during them"
    )

    assert sum(len(s) - 1 for s in secrets.values()) == ROTATIONS
    assert overlapped >= 2, "the re-encryptions must overlap the rotations to test anything"
    for code, output, _ in [*runs, (*final, False)]:
        assert code == 0, output
    ring, first = Keyring([new_key, ENCRYPTION_KEY]), Keyring([new_key])
    undone = []
    for sub_id, answered in secrets.items():
        stored = await stored_value(db, "subscriptions", sub_id, "secret") or ""
        previous = await stored_value(db, "subscriptions", sub_id, "previous_secret")
        assert first.is_current(stored)  # the final run left nothing under the old key
        if ring.decrypt(stored) != answered[-1]:
            undone.append(sub_id)
        elif len(answered) > 1:
            assert previous is not None
            assert ring.decrypt(previous) == answered[-2]
    assert not undone, f"{len(undone)} subscriptions lost the secret the API last answered"
    for district_id, token in tokens.items():
        stored = await stored_value(db, "districts", district_id, "token") or ""
        assert ring.decrypt(stored) == token, district_id
