"""The admin token, the signing key and the encryption key of a process.

Every process of one deployment must share them: a service token minted by one API replica
is checked with the signing key by the others, and a subscription secret encrypted by one is
decrypted by the workers. So outside ``relay run`` they come from the environment, and a
process that lacks one refuses to start, naming it, rather than generating its own (two
replicas that each generated a key would reject each other's tokens, silently).

``relay run`` (one machine, one command) generates whatever is unset and keeps it in the data
dir (mode 0600); processes started later in that folder (an extra ``relay worker``, ``relay
serve``) read those files. Which source was used is logged once, never the values.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relay._exceptions import ConfigError
from relay.db.crypto import Keyring, generate_key
from relay.settings import Settings

logger = logging.getLogger("relay.secrets")


@dataclass(frozen=True)
class _Secret:
    field: str  # the Settings field, and the file's name in the data dir
    env: str
    make: Callable[[], str]


ADMIN_TOKEN = _Secret(
    "admin_token", "RELAY_ADMIN_TOKEN", lambda: "rat_" + secrets.token_urlsafe(32)
)
SECRET_KEY = _Secret("secret_key", "RELAY_SECRET_KEY", lambda: secrets.token_urlsafe(48))
ENCRYPTION_KEY = _Secret("encryption_key", "RELAY_ENCRYPTION_KEY", generate_key)
ALL = (ADMIN_TOKEN, SECRET_KEY, ENCRYPTION_KEY)
_TOLD: set[str] = set()  # where this process's secrets came from, as logged


@dataclass(frozen=True)
class RuntimeSecrets:
    admin_token: str
    secret_key: str
    encryption_key: str
    admin_token_generated: bool = False

    def __repr__(self) -> str:
        return "RuntimeSecrets(admin_token=***, secret_key=***, encryption_key=***)"

    @functools.cached_property
    def keyring(self) -> Keyring:
        """One per process: relay run's start-up re-encryption and its API share it (and
        its decrypt cache)."""
        return Keyring.parse(self.encryption_key)


def _stored(path: Path, make: str) -> tuple[str, bool]:
    """Read ``path``, or create it with ``make`` atomically (first process to start wins)."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets: owner only
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make, True


def _kept(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def resolve(
    settings: Settings, wanted: tuple[_Secret, ...], *, generate: bool = False
) -> tuple[dict[str, str], set[str]]:
    """The ``wanted`` secrets (field → value) and those of them generated just now; raises
    ConfigError naming every one that is missing (with ``generate`` none is)."""
    values: dict[str, str] = {}
    generated: set[str] = set()
    sources: set[str] = set()
    missing: list[str] = []
    for secret in wanted:
        value: str | None = getattr(settings, secret.field)
        if value:
            sources.add("the environment")
        else:
            path = settings.data_dir / secret.field
            if generate:
                value, made = _stored(path, secret.make())
                if made:
                    generated.add(secret.field)
            else:
                value = _kept(path)
            if value:
                sources.add(f"{settings.data_dir}/ (kept by relay run)")
        if value:
            values[secret.field] = value
        else:
            missing.append(secret.env)
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: not set. Every process of a deployment must share "
            f"{'these' if len(missing) > 1 else 'this'} (replicas that generated their own "
            "would reject each other's tokens and secrets): set them in the environment, "
            "the same on every process ('relay keys new' prints a fresh set). Only "
            "'relay run' generates them, in its data dir."
        )
    told = " and ".join(sorted(sources))
    if told not in _TOLD:  # once per process (relay run's API and worker share one)
        _TOLD.add(told)
        logger.info("secrets from %s", told)
    return values, generated


def resolve_secrets(settings: Settings, *, generate: bool = False) -> RuntimeSecrets:
    """An API process's secrets (``generate``: ``relay run``'s, made when unset)."""
    values, generated = resolve(settings, ALL, generate=generate)
    return RuntimeSecrets(**values, admin_token_generated=ADMIN_TOKEN.field in generated)


def resolve_keyring(settings: Settings) -> Keyring:
    """A worker's keyring: it decrypts district tokens and signing secrets, nothing more."""
    values, _ = resolve(settings, (ENCRYPTION_KEY,))
    return Keyring.parse(values[ENCRYPTION_KEY.field])


def admin_token(settings: Settings) -> str:
    """The admin token alone, for a command that talks to the API (``relay listen``)."""
    values, _ = resolve(settings, (ADMIN_TOKEN,))
    return values[ADMIN_TOKEN.field]
