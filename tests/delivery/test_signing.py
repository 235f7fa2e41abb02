"""Signing is verified the way a receiver would: with the official standardwebhooks package."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from relay.delivery.signing import (
    SECRET_PATTERN,
    generate_secret,
    parse_secret,
    sign,
    webhook_body,
    webhook_headers,
)

EVENT: dict[str, Any] = {
    "created": "2023-03-26T16:09:41.000Z",
    "data": {
        "object": {
            "id": "58da8c63d7dc0ca0680003ee",
            "name": {"first": "Zoë", "last": "Wisoky"},
            "roles": {"student": {"school": "s1", "schools": ["s1"]}},
        },
        "previous_attributes": {"roles": {"student": {"gender": "X"}}},
    },
    "id": "64206e4531f12f05cc490fa5",
    "type": "users.updated",
}


def test_generated_secrets_are_whsec_base64_of_32_bytes_and_unique() -> None:
    secrets = {generate_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[6:], validate=True)) == 32
        assert parse_secret(secret) == base64.b64decode(secret[6:])


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("", "start with 'whsec_'"),
        ("sk_" + base64.b64encode(b"x" * 32).decode(), "start with 'whsec_'"),
        ("whsec_not base64!!", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 32).decode().rstrip("="), "base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24-64 bytes, got 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24-64 bytes, got 65"),
        ("whsec_", "got 0"),
    ],
)
def test_parse_secret_refuses_bad_secrets(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_secret(secret)


def test_parse_secret_accepts_24_and_64_bytes() -> None:
    for n in (24, 64):
        assert len(parse_secret("whsec_" + base64.b64encode(bytes(range(n))).decode())) == n


def test_body_is_the_event_plus_district_only() -> None:
    body = webhook_body(EVENT, "d1")
    decoded = json.loads(body)
    assert decoded == {**EVENT, "district": "d1"}
    assert list(decoded) == [*EVENT, "district"]
    assert decoded["data"]["previous_attributes"] == {"roles": {"student": {"gender": "X"}}}
    assert b" " not in body.replace(b"Zo\xc3\xab Wisoky", b"")  # compact, UTF-8 kept
    assert "Zoë".encode() in body
    assert "district" not in EVENT  # the stored event is not mutated


def test_body_replaces_an_existing_district_and_survives_lone_surrogates() -> None:
    assert json.loads(webhook_body({**EVENT, "district": "old"}, "new"))["district"] == "new"
    odd = {**EVENT, "id": "\ud800"}
    body = webhook_body(odd, "d1")
    body.decode("utf-8")  # valid UTF-8, so receivers can verify it
    assert json.loads(body)["id"] == "\ud800"


def test_verifies_with_official_library() -> None:
    secret = generate_secret()
    body = webhook_body(EVENT, "d1")
    headers = webhook_headers([secret], EVENT["id"], body)
    assert headers["webhook-id"] == EVENT["id"]
    assert headers["content-type"] == "application/json"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {**EVENT, "district": "d1"}


def test_rotation_each_secret_alone_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    body = webhook_body(EVENT, "d1")
    headers = webhook_headers([new, old], EVENT["id"], body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_tampering_fails_verification() -> None:
    secret = generate_secret()
    body = webhook_body(EVENT, "d1")
    headers = webhook_headers([secret], EVENT["id"], body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b'"d1"', b'"d2"'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "another"})
    bumped = str(int(headers["webhook-timestamp"]) + 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-timestamp": bumped})


def test_sign_matches_the_spec_formula() -> None:
    import hashlib
    import hmac

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    expected = base64.b64encode(
        hmac.new(base64.b64decode(secret[6:]), b"msg_1.1614265330.{}", hashlib.sha256).digest()
    ).decode()
    assert sign([secret], "msg_1", 1614265330, b"{}") == f"v1,{expected}"


def test_sign_requires_a_sequence_of_secrets() -> None:
    with pytest.raises(ValueError, match="at least one"):
        sign([], "m", 1, b"{}")
    with pytest.raises(TypeError):
        sign(generate_secret(), "m", 1, b"{}")


@given(
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=10,
        ),
        max_size=5,
    ),
    st.text(min_size=1, max_size=24),
)
def test_any_event_body_verifies(event: dict[str, Any], msg_id: str) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = webhook_body(event, "d1")
    headers = webhook_headers([secret], msg_id, body)
    assert Webhook(secret).verify(body, headers) == {**event, "district": "d1"}


@pytest.mark.parametrize("size", range(16, 72))
def test_the_schema_pattern_accepts_exactly_what_parse_secret_does(size: int) -> None:
    """The OpenAPI schema promises what the API accepts (schemathesis found a secret the
    old, looser pattern allowed and the API refused)."""
    for encoded in (base64.b64encode(os.urandom(size)).decode(), "A" * size, "A" * size + "="):
        secret = "whsec_" + encoded
        try:
            parse_secret(secret, strict=True)
        except ValueError:
            accepted = False
        else:
            accepted = True
        assert bool(re.fullmatch(SECRET_PATTERN, secret)) is accepted, secret
