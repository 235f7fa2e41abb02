"""Standard Webhooks signing: what a receiver verifies with the official libraries unchanged.

The signature is ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, one per active
secret and space-separated, so a secret can be rotated without a flag day: during the overlap
both the old and the new secret sign, and a receiver holding either one verifies. The key is the
base64-decoded part of ``whsec_<base64>``.

The body is serialised exactly once per attempt and the same bytes are signed and sent; signing
a re-serialisation would break verification on any whitespace or key-order difference.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64
_GENERATED_BYTES = 32


def generate_secret() -> str:
    """A new ``whsec_`` secret holding 32 random bytes (the size Svix and Stripe use)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(_GENERATED_BYTES)).decode("ascii")


def _base64_pattern(min_bytes: int, max_bytes: int) -> str:
    """A regular expression for the standard base64 of ``min_bytes``-``max_bytes`` bytes:
    whole quads, then none, ``xx==`` or ``xxx=``, as many as those lengths allow."""
    char = "[A-Za-z0-9+/]"
    forms = []
    for tail, extra in (("", 0), (f"{char}{{2}}==", 1), (f"{char}{{3}}=", 2)):
        fewest, most = -(-(min_bytes - extra) // 3), (max_bytes - extra) // 3
        if fewest <= most:
            forms.append(f"(?:{char}{{4}}){{{fewest},{most}}}{tail}")
    return "(?:" + "|".join(forms) + ")"


#: what parse_secret accepts, for the API schema
SECRET_PATTERN = f"^{SECRET_PREFIX}{_base64_pattern(SECRET_MIN_BYTES, SECRET_MAX_BYTES)}$"


def parse_secret(secret: str, *, strict: bool = False) -> bytes:
    """The HMAC key of ``secret``; ValueError naming the problem if it is not a valid secret.

    ``strict`` (registration): canonical base64 only, exactly what ``SECRET_PATTERN`` says;
    signing stays lenient about padding, for secrets registered before the check.
    """
    if not isinstance(secret, str):
        raise ValueError("secret must be a string")
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"secret must be {SECRET_PREFIX!r} followed by standard base64 (A-Z a-z 0-9 + /, "
            "'=' padding)"
        ) from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"secret must decode to {SECRET_MIN_BYTES}-{SECRET_MAX_BYTES} bytes, got {len(key)}"
        )
    if strict and re.fullmatch(SECRET_PATTERN, secret) is None:
        raise ValueError("secret must be canonical base64: '=' padding only as its length needs")
    return key


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<sig>`` per secret, space-separated."""
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not one string")
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(_signing_key(s), signed, hashlib.sha256)).decode()
        for s in secrets
    )


@functools.lru_cache(maxsize=4096)
def _signing_key(secret: str) -> bytes:
    """``parse_secret``, cached: the same few secrets sign every attempt of a subscription
    (decoding each time was 1 % of a busy worker, py-spy on bench/throughput.py)."""
    return parse_secret(secret)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The four Standard Webhooks headers for one attempt (``timestamp`` defaults to now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secrets, msg_id, ts, body),
        "content-type": "application/json",
    }


def webhook_body(
    event_raw: Mapping[str, Any], district_id: str, source: str | None = None
) -> bytes:
    """The Clever event exactly as received plus a top-level ``"district"``, as compact JSON.

    Every key Clever sent is kept in its order (``previous_attributes`` stays under ``data``);
    only ``district`` is added (replacing one Clever might someday send), and for an event
    the relay made (a sync's, a bootstrap's) its ``source``; Clever's own carry none. UTF-8
    is written as is; should the event hold a lone surrogate, which JSON permits but UTF-8
    cannot encode, it falls back to ``\\u`` escapes so the body is always valid UTF-8 for the
    receiver.
    stdlib ``json`` costs ~10 us for a typical event, a few percent of an HTTP attempt,
    so orjson is not worth a dependency here.
    """
    payload = dict(event_raw)
    payload.pop("district", None)
    payload["district"] = district_id
    if source is not None:
        payload.pop("source", None)
        payload["source"] = source
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode("ascii")


TIMESTAMP_TOLERANCE = 300  # seconds, as the Standard Webhooks libraries allow


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """Whether ``body`` carries a valid signature of ``secret`` with a fresh timestamp: what a
    receiver does (``relay listen`` uses it; real receivers use the standardwebhooks package)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TIMESTAMP_TOLERANCE:
        return False
    expected = sign([secret], msg_id, int(stamp), body).encode()
    offered = lowered.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered)


def active_secrets(
    secret: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign now: the current one, plus the previous one during the 24 h
    overlap after a rotation (so receivers can switch at their own pace)."""
    if previous and previous_expires_at is not None and previous_expires_at > now:
        return [secret, previous]
    return [secret]
