"""A subscription or district whose stored secret this API process's keys cannot decrypt
(written by a process with another ``RELAY_ENCRYPTION_KEY``) is read, changed and deleted
like any other through the API (each of these answered 500 before); only a route that needs
the secret says it cannot, with a 409 that names the cause. And the API says at start-up
when its keys do not read what is stored (``relay.db.crypto.check_keys``)."""

from __future__ import annotations

import logging

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from relay.api.app import create_app
from relay.db import Database
from relay.db.crypto import Keyring
from relay.delivery.signing import generate_secret
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.api import service_client
from tests.support.config import ENCRYPTION_KEY
from tests.support.keys import OTHER_KEY, store_under_other_key, stored_value
from tests.support.receiver import Receiver
from tests.support.servers import serve

OURS = Keyring([ENCRYPTION_KEY])


async def _unreadable_subscription(admin: httpx.Client, db: Database, url: str) -> str:
    created = admin.post("/v1/subscriptions", json={"url": url, "owner": "team"})
    assert created.status_code == 201, created.text
    sub_id = str(created.json()["id"])
    await store_under_other_key(db, "subscriptions", sub_id, "secret", generate_secret())
    return sub_id


async def test_the_owner_reads_changes_and_deletes_a_subscription_it_cannot_decrypt(
    admin: httpx.Client, db: Database
) -> None:
    receiver = Receiver()
    with serve(receiver.app()) as srv:
        sub_id = await _unreadable_subscription(admin, db, srv.url + "/hook")
        team = service_client(admin, "team")
        shown = team.get(f"/v1/subscriptions/{sub_id}")
        assert shown.status_code == 200, shown.text
        assert "secret" not in shown.json()
        listed = team.get("/v1/subscriptions")
        assert listed.status_code == 200, listed.text
        assert [s["id"] for s in listed.json()["data"]] == [sub_id]
        patched = team.patch(f"/v1/subscriptions/{sub_id}", json={"description": "ours"})
        assert patched.status_code == 200, patched.text

        # a test send needs the secret: a 409 naming the cause, nothing sent
        tested = team.post(f"/v1/subscriptions/{sub_id}/test")
        assert tested.status_code == 409, tested.text
        assert tested.json()["error"]["code"] == "secret_unreadable"
        assert "RELAY_ENCRYPTION_KEY" in tested.json()["error"]["message"]
        assert receiver.received == []

        # rotate: the unreadable secret cannot sign, so no overlap; the new one signs alone
        rotated = team.post(f"/v1/subscriptions/{sub_id}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        secret = rotated.json()["secret"]
        assert (
            OURS.decrypt(await stored_value(db, "subscriptions", sub_id, "secret") or "") == secret
        )
        assert await stored_value(db, "subscriptions", sub_id, "previous_secret") is None
        tested = team.post(f"/v1/subscriptions/{sub_id}/test")
        assert tested.status_code == 200, tested.text
        (request,) = receiver.received
        assert len(request.headers["webhook-signature"].split()) == 1
        Webhook(secret).verify(request.body, request.headers)

        assert team.delete(f"/v1/subscriptions/{sub_id}").status_code == 204
        assert team.get(f"/v1/subscriptions/{sub_id}").status_code == 404


async def test_patch_sets_a_new_secret_at_once(admin: httpx.Client, db: Database) -> None:
    sub_id = await _unreadable_subscription(admin, db, "http://127.0.0.1:9/hook")
    rotated = admin.post(f"/v1/subscriptions/{sub_id}/rotate-secret")  # now with an overlap
    assert rotated.status_code == 200
    rotated = admin.post(f"/v1/subscriptions/{sub_id}/rotate-secret")
    assert await stored_value(db, "subscriptions", sub_id, "previous_secret") is not None
    secret = generate_secret()
    patched = admin.patch(f"/v1/subscriptions/{sub_id}", json={"secret": secret})
    assert patched.status_code == 200, patched.text
    assert secret not in patched.text
    assert OURS.decrypt(await stored_value(db, "subscriptions", sub_id, "secret") or "") == secret
    assert await stored_value(db, "subscriptions", sub_id, "previous_secret") is None
    refused = admin.patch(f"/v1/subscriptions/{sub_id}", json={"secret": "whsec_short"})
    assert refused.status_code == 422
    assert "whsec_short" not in refused.text


async def test_the_admin_reads_retokens_and_deletes_a_district_it_cannot_decrypt(
    admin: httpx.Client, db: Database
) -> None:
    body = {"id": "d-other-key", "token": "clever-token-1"}
    assert admin.post("/v1/districts", json=body).status_code == 201
    await store_under_other_key(db, "districts", "d-other-key", "token", "clever-token-1")
    shown = admin.get("/v1/districts/d-other-key")
    assert shown.status_code == 200, shown.text
    listed = admin.get("/v1/districts")
    assert listed.status_code == 200, listed.text
    patched = admin.patch("/v1/districts/d-other-key", json={"token": "clever-token-2"})
    assert patched.status_code == 200, patched.text
    stored = await stored_value(db, "districts", "d-other-key", "token")
    assert OURS.decrypt(stored or "") == "clever-token-2"
    assert admin.delete("/v1/districts/d-other-key").status_code == 204


async def test_the_api_says_at_start_up_which_stored_secrets_its_keys_do_not_read(
    admin: httpx.Client,
    db: Database,
    settings: Settings,
    runtime: RuntimeSecrets,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub_id = await _unreadable_subscription(admin, db, "http://127.0.0.1:9/hook")
    with (
        caplog.at_level(logging.WARNING, logger="relay.secrets"),
        serve(create_app(settings, runtime)),
    ):
        pass  # started: the check runs before the first request is served
    (line,) = [r.getMessage() for r in caplog.records if "do not decrypt" in r.getMessage()]
    assert f"subscription {sub_id} (secret)" in line
    assert "RELAY_ENCRYPTION_KEY" in line
    assert OTHER_KEY not in caplog.text
    assert ENCRYPTION_KEY not in caplog.text
