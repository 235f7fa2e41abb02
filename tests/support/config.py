"""Where the suite's services are: the database backend under test, the shared PostgreSQL
and Redis servers, and the admin token of the API fixtures."""

from __future__ import annotations

import os

BACKEND = os.environ.get("RELAY_TEST_DATABASE", "sqlite")


POSTGRES_SERVER = os.environ.get(
    "RELAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


ADMIN_TOKEN = "rat_test-admin-token"


ENCRYPTION_KEY = "mjmt_aJkhmTu6Q_kAvQEMmpD5nlbmFztTBwki7YOyHc="  # a Fernet key for the suite


REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
