"""The admin token and the signing key: from the environment, or generated once and kept in
the data dir (mode 0600) so every process on this machine agrees on them."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from relay.settings import Settings


@dataclass(frozen=True)
class RuntimeSecrets:
    admin_token: str
    secret_key: str
    admin_token_generated: bool = False

    def __repr__(self) -> str:
        return "RuntimeSecrets(admin_token=***, secret_key=***)"


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


def resolve_secrets(settings: Settings) -> RuntimeSecrets:
    generated = False
    admin = settings.admin_token
    if not admin:
        admin, generated = _stored(
            settings.data_dir / "admin_token", "rat_" + secrets.token_urlsafe(32)
        )
    key = settings.secret_key
    if not key:
        key, _ = _stored(settings.data_dir / "secret_key", secrets.token_urlsafe(48))
    return RuntimeSecrets(admin_token=admin, secret_key=key, admin_token_generated=generated)
