"""Settings from the environment (and an optional ``.env``), validated at start-up.

Every problem is reported as a :class:`~relay._exceptions.ConfigError` naming the environment
variable, so an operator never has to map a Python field name back to what they typed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from relay._exceptions import ConfigError
from relay.tuning import Timeouts, Tuning
from relay.validation import what_is_wrong

if TYPE_CHECKING:
    from relay.delivery.schedule import RetrySchedule
    from relay.delivery.targets import TargetPolicy

SUPPORTED_DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAY_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite+aiosqlite:///relay.db"
    redis_url: str | None = None
    admin_token: str | None = None
    secret_key: str | None = None
    encryption_key: str | None = None  # Fernet keys, comma-separated: relay/db/crypto.py
    max_subscriptions_per_owner: int = Field(default=1000, ge=1)
    data_dir: Path = Path(".relay")
    clever_api_url: str = "https://api.clever.com"
    clever_oauth_url: str = "https://clever.com"
    clever_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("CLEVER_CLIENT_ID", "RELAY_CLEVER_CLIENT_ID")
    )
    clever_client_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CLEVER_CLIENT_SECRET", "RELAY_CLEVER_CLIENT_SECRET"),
    )
    poll_interval: float = Field(default=2.0, gt=0)
    retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    delivery_timeout: float = Field(default=15.0, gt=0, le=300)
    disable_after: float = Field(default=432000.0, gt=0)
    allowed_targets: str | None = None
    allow_loopback: bool = False  # with allowed_targets unset; relay run sets it
    retention_days: float = Field(default=30.0, gt=0)
    poll_lease: float = Field(default=30.0, ge=1, le=3600)
    clever_page_size: int = Field(default=1000, ge=1, le=10000)
    clever_retention: float = Field(default=30 * 86400, gt=0)
    reconcile_interval: int = Field(default=10, ge=1, le=60)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    poll_process: bool = True  # poll in a child process of each worker: workers/polling.py
    poll_nice: int = Field(default=10, ge=0, le=19)  # that child's CPU niceness
    # the roster's syncs (relay/roster/sync.py): at once on a gap, and every N seconds if set
    resync_on_gap: bool = True
    resync_every: float | None = Field(default=None, gt=0)
    sync_page_size: int = Field(default=1000, ge=1, le=10000)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL: {value!r}") from None
        if url.drivername not in SUPPORTED_DATABASE_DRIVERS:
            supported = " or ".join(f"{d}://..." for d in SUPPORTED_DATABASE_DRIVERS)
            raise ValueError(f"unsupported driver {url.drivername!r}; use {supported}")
        return value

    @field_validator("retry_schedule")
    @classmethod
    def _check_retry_schedule(cls, value: str) -> str:
        from relay.delivery.schedule import RetrySchedule

        RetrySchedule.parse(value)
        return value

    @field_validator("clever_api_url", "clever_oauth_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def schedule(self) -> RetrySchedule:
        from relay.delivery.schedule import RetrySchedule

        return RetrySchedule.parse(self.retry_schedule)

    @property
    def tuning(self) -> Tuning:
        """The internal knobs, with the values that derive from these settings."""
        return Tuning(timeouts=Timeouts(delivery=self.delivery_timeout))

    @property
    def target_policy(self) -> TargetPolicy:
        from relay.delivery.targets import TargetPolicy

        return TargetPolicy.from_env_value(self.allowed_targets, loopback=self.allow_loopback)

    @property
    def clever_credentials(self) -> tuple[str, str] | None:
        if self.clever_client_id and self.clever_client_secret:
            return self.clever_client_id, self.clever_client_secret
        return None


_ALIASED = {"clever_client_id": "CLEVER_CLIENT_ID", "clever_client_secret": "CLEVER_CLIENT_SECRET"}


def _env_name(field: str) -> str:
    return _ALIASED.get(field, f"RELAY_{field.upper()}")


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            # the value is not repeated: a URL or key in it may hold a password or a secret
            problems.append(f"{_env_name(field)}: {what_is_wrong(error, field)}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    return load_settings()
