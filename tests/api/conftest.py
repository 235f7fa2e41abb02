"""The API under a real uvicorn server, and clients for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.api.app import create_app
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.servers import serve
from tests.support.ui import chromium, form_client


@pytest.fixture
def api_url(settings: Settings, runtime: RuntimeSecrets) -> Iterator[str]:
    with serve(create_app(settings, runtime)) as server:
        yield server.url


@pytest.fixture
def admin(api_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def anonymous(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=10) as client:
        yield client


@pytest.fixture
def queued_api_url(settings: Settings, runtime: RuntimeSecrets, redis_url: str) -> Iterator[str]:
    """The API with its Redis queue, so what it marks due is queued at once."""
    with serve(create_app(settings, runtime, redis_url=redis_url)) as server:
        yield server.url


@pytest.fixture
def browserless(api_url: str) -> Iterator[httpx.Client]:
    with form_client(api_url) as client:
        yield client


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver
