"""For the /ui tests: rows made in the database, sign-in over HTTP, the forms' hidden fields,
and a headless Chromium driven by selenium (never downloading anything)."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from relay.db import Database, utcnow
from relay.db.models import Delivery, DeliveryAttempt, Event, Subscription
from relay.queue import Job, RedisQueue

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
XSS = "<script>alert(1)</script>"
IMG_XSS = "<img src=x onerror=\"document.title='pwned'\">"
INSTALL_HINT = (
    "the /ui browser tests need Chromium and its driver: "
    "apt-get update && apt-get install -y chromium chromium-driver "
    "(and selenium from the dev extra: pip install -e '.[dev]')"
)


async def add_sub(db: Database, owner: str, **fields: Any) -> str:
    fields.setdefault("url", f"http://127.0.0.1:9/{owner}")
    sub = Subscription(owner=owner, secret="whsec_x", **fields)
    async with db.write() as session:
        session.add(sub)
    return sub.id


async def add_failed(
    db: Database,
    subscription_id: str,
    event_id: str,
    attempts: list[tuple[int | None, str | None, str]],
    created_at: datetime = T0,
    event_type: str = "users.updated",
    status: str = "failed",
) -> int:
    """A delivery (and its event) that ended ``status`` after ``attempts``."""
    delivery = Delivery(
        subscription_id=subscription_id,
        event_id=event_id,
        event_type=event_type,
        status=status,
        attempts=len(attempts),
        last_status_code=attempts[-1][0] if attempts else None,
        created_at=created_at,
    )
    body = f'{{"id": "{event_id}", "type": "{event_type}", "data": {{"object": {{}}}}}}'
    async with db.write() as session:
        if await session.get(Event, event_id) is None:
            session.add(
                Event(id=event_id, district_id="d1", type=event_type, created=created_at, body=body)
            )
        session.add(delivery)
        await session.flush()
        assert delivery.id is not None
        for n, (code, error, excerpt) in enumerate(attempts):
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery.id,
                    attempted_at=created_at + timedelta(seconds=n * 5),
                    status_code=code,
                    duration_ms=12,
                    error=error,
                    response_excerpt=excerpt,
                )
            )
    assert delivery.id is not None
    return delivery.id


async def seed(db: Database) -> dict[str, Any]:
    """Owner alpha: a disabled, a failing and a healthy subscription, two failed deliveries
    (one with hostile receiver replies); owner beta: a disabled subscription and its own."""
    alpha_disabled = await add_sub(
        db, "alpha", enabled=False, disabled_reason="receiver answered 410 <b>Gone</b>"
    )
    alpha_failing = await add_sub(db, "alpha", failing_since=T0)
    alpha_ok = await add_sub(db, "alpha")
    beta = await add_sub(db, "beta", enabled=False, disabled_reason="beta-disabled")
    xss = await add_failed(
        db,
        alpha_failing,
        "a0000000000000000000xss1",
        [(500, None, XSS), (None, "connection refused", ""), (502, None, IMG_XSS)],
    )
    plain = await add_failed(
        db, alpha_disabled, "a000000000000000000plain", [(410, None, "gone")], T0 + timedelta(1)
    )
    other = await add_failed(db, beta, "b0000000000000000000beta", [(500, None, "beta-only")])
    return {
        "alpha_disabled": alpha_disabled,
        "alpha_failing": alpha_failing,
        "alpha_ok": alpha_ok,
        "beta": beta,
        "xss": xss,
        "plain": plain,
        "other": other,
    }


def mint(admin: httpx.Client, owner: str) -> str:
    response = admin.post("/v1/tokens", json={"owner": owner})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def login(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/ui/login", data={"token": token})


def form_client(api_url: str) -> httpx.Client:
    """A cookie-keeping client that posts forms as a page of the relay would."""
    return httpx.Client(base_url=api_url, timeout=10, headers={"Origin": api_url})


def csrf_of(page: str) -> str:
    """The CSRF token the page's forms carry."""
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, "no CSRF field on the page"
    return html.unescape(match.group(1))


def delivery_ids(page: str) -> list[int]:
    return [int(m) for m in re.findall(r'<details class="delivery" id="delivery-(\d+)"', page)]


def screenshot_path(name: str) -> Path | None:
    """Where a browser test saves its screenshot ``name`` (``RELAY_UI_SCREENSHOTS``, a
    directory outside the repository), or None to save none."""
    folder = os.environ.get("RELAY_UI_SCREENSHOTS")
    return Path(folder) / name if folder else None


@contextlib.contextmanager
def chromium(profile: Path, size: str = "1400,1000") -> Iterator[Any]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail(INSTALL_HINT)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(INSTALL_HINT)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={size}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium never downloads anything
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


async def queue_events(
    db: Database, redis_url: str, subscription_ids: list[str], types: list[str], first: int = 0
) -> list[int]:
    """One stored event per type, each with a delivery to every subscription, queued for its
    first attempt as the page store and the queue would leave them."""
    now = utcnow()
    deliveries: list[Delivery] = []
    async with db.write() as session:
        for n, event_type in enumerate(types, start=first):
            event_id = f"6c{n:022x}"
            body = json.dumps({"id": event_id, "type": event_type, "data": {"object": {}}})
            session.add(
                Event(id=event_id, district_id="d1", type=event_type, created=now, body=body)
            )
            for subscription_id in subscription_ids:
                delivery = Delivery(
                    subscription_id=subscription_id,
                    event_id=event_id,
                    event_type=event_type,
                    next_attempt_at=now,
                )
                session.add(delivery)
                deliveries.append(delivery)
    ids = [d.id for d in deliveries if d.id is not None]
    redis = ArqRedis.from_url(redis_url)
    await RedisQueue(redis).enqueue([Job(i, 1, now) for i in ids])
    await redis.aclose()
    return ids
