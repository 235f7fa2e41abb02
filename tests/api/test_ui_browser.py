"""``/ui`` in headless Chromium driven by selenium: sign-in, what a service session sees,
escaping and CSP as a browser applies them; and the on-call walk over a real failing
receiver — the failing state, a filter, a retry from the page that a real worker delivers.

Screenshots go to ``$RELAY_UI_SCREENSHOTS`` when set (a folder outside the repository),
else to the test's temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from relay.api import ui
from relay.db import Database
from relay.db.models import Delivery, Subscription
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.receiver import Receiver
from tests.support.servers import serve
from tests.support.ui import IMG_XSS, XSS, mint, queue_events, screenshot_path, seed
from tests.support.worker import running_worker, wait_for, worker_settings


def _wait(browser: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(browser, 15).until(until.presence_of_element_located((By.ID, element_id)))


def _sign_in(browser: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url + "/ui")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    _wait(browser, "signed-in-as")


def _shown(browser: Any) -> list[int]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "details.delivery")
    return [int(row.get_attribute("data-id")) for row in rows]


def _save(browser: Any, tmp_path: Path, name: str) -> None:
    path = screenshot_path(name) or tmp_path / name
    assert browser.save_screenshot(str(path)), path


def _no_csp_errors(browser: Any) -> None:
    logs = browser.get_log("browser")
    assert [m for m in logs if "Content Security Policy" in m.get("message", "")] == []


async def test_in_chromium_a_service_token_signs_in_sees_its_failures_and_signs_out(
    db: Database, admin: httpx.Client, api_url: str, browser: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    ids = await seed(db)
    token = mint(admin, "alpha")

    browser.get(api_url + "/ui")
    assert browser.find_elements(By.ID, "signed-in-as") == []
    _sign_in(browser, api_url, token)
    assert browser.current_url == api_url + "/ui"
    assert browser.find_element(By.ID, "signed-in-as").text == "Signed in as service alpha"

    cookie = browser.get_cookie(ui.COOKIE)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert token not in cookie["value"]
    # HttpOnly: invisible to the page's JavaScript
    assert ui.COOKIE not in browser.execute_script("return document.cookie")

    assert set(_shown(browser)) == {ids["xss"], ids["plain"]}
    subs = {
        row.get_attribute("data-id")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.subscription")
    }
    assert subs == {ids["alpha_disabled"], ids["alpha_failing"]}

    xss_row = browser.find_element(By.ID, f"delivery-{ids['xss']}")
    assert xss_row.get_attribute("open") is None  # one line until asked
    assert xss_row.find_element(By.CSS_SELECTOR, "summary .last").text.startswith("502")
    xss_row.find_element(By.CSS_SELECTOR, "summary > span").click()
    assert xss_row.get_attribute("open") is not None
    attempts = xss_row.find_elements(By.CSS_SELECTOR, "tr.attempt")
    assert [a.find_element(By.CLASS_NAME, "status-code").text for a in attempts] == [
        "500",
        "—",
        "502",
    ]
    assert "connection refused" in attempts[1].text
    excerpts = [e.text for e in xss_row.find_elements(By.CSS_SELECTOR, "pre.excerpt")]
    assert excerpts[0] == XSS  # shown as text…
    assert excerpts[2] == IMG_XSS
    assert browser.find_elements(By.TAG_NAME, "script") == []  # …not as elements
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018  (raises when there is no alert)
    assert browser.title == "Failures — Clever Events Relay"
    # the stylesheet applied (CSP allows 'self' styles)
    header_bg = browser.find_element(By.TAG_NAME, "header").value_of_css_property(
        "background-color"
    )
    assert header_bg in ("rgba(29, 35, 48, 1)", "rgb(29, 35, 48)")
    _no_csp_errors(browser)

    browser.find_element(By.ID, "logout").click()
    _wait(browser, "token")
    assert browser.find_elements(By.ID, "signed-in-as") == []
    assert browser.get_cookie(ui.COOKIE) is None
    browser.get(api_url + "/ui")
    assert browser.find_elements(By.ID, "signed-in-as") == []


@pytest.fixture
def receivers() -> Iterator[tuple[str, list[int]]]:
    """One receiver: ``/gone`` answers 410, every other path what ``status[0]`` says."""
    status = [503]
    receiver = Receiver()

    def answer(n: int) -> tuple[int, dict[str, str], float]:
        with receiver.lock:
            path = receiver.received[n].path
        return (410 if path == "/gone" else status[0]), {}, 0.0

    receiver.responder = answer
    with serve(receiver.app()) as server:
        yield server.url, status


async def _failed(db: Database, ids: list[int]) -> bool:
    async with db.read() as session:
        rows = await session.exec(select(Delivery.status).where(col(Delivery.id).in_(ids)))
        return set(rows.all()) == {"failed"}


async def _status(db: Database, delivery_id: int) -> str:
    async with db.read() as session:
        delivery = await session.get(Delivery, delivery_id)
    assert delivery is not None
    return delivery.status


async def test_in_chromium_the_on_call_walk_failing_state_filter_and_retry(
    db: Database,
    settings: Settings,
    redis_url: str,
    queued_api_url: str,
    receivers: tuple[str, list[int]],
    browser: Any,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    receiver_url, status = receivers
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=queued_api_url, headers=headers, timeout=10) as admin:
        token = mint(admin, "gradebook")
        made = [
            admin.post(
                "/v1/subscriptions",
                json={"url": f"{receiver_url}{path}", "owner": "gradebook", "description": path},
            ).json()["id"]
            for path in ("/hooks/clever", "/sync", "/gone")
        ]
    hooks, sync, gone = made
    types = ["users.updated", "sections.created", "users.created", "sections.updated"] * 6
    cfg = worker_settings(settings, "http://127.0.0.1:9", retry_schedule="0.1")  # 2 attempts
    async with running_worker(cfg, redis_url):
        ids = await queue_events(db, redis_url, [hooks, sync], types)
        await wait_for(lambda: _failed(db, ids), timeout=60)
        await queue_events(db, redis_url, [gone], ["users.deleted"], first=len(types))
        await wait_for(lambda: _disabled(db, gone), timeout=30)

        _sign_in(browser, queued_api_url, token)
        assert len(_shown(browser)) == len(ids) + 1  # 48 failed, and the 410: one page
        states = {
            row.get_attribute("data-id"): row.find_element(By.CSS_SELECTOR, "td.state").text
            for row in browser.find_elements(By.CSS_SELECTOR, "tr.subscription")
        }
        assert states == {hooks: "failing", sync: "failing", gone: "disabled"}
        first = browser.find_element(By.ID, f"delivery-{ids[-1]}")
        first.find_element(By.CSS_SELECTOR, "summary > span").click()  # its attempts
        assert len(first.find_elements(By.CSS_SELECTOR, "tr.attempt")) == 2
        _no_csp_errors(browser)
        _save(browser, tmp_path, "ui-failing.png")

        # a filter: one event type of one subscription
        browser.find_element(By.NAME, "event_type").send_keys("sections.created")
        browser.find_element(By.NAME, "subscription_id").send_keys(sync)
        Select(browser.find_element(By.NAME, "status")).select_by_value("failed")
        browser.find_element(By.ID, "apply").click()
        _wait(browser, "deliveries-heading")
        assert "event_type=sections.created" in browser.current_url
        filtered = _shown(browser)
        assert len(filtered) == types.count("sections.created")
        async with db.read() as session:
            rows = await session.exec(select(Delivery).where(col(Delivery.id).in_(filtered)))
            assert {(d.subscription_id, d.event_type) for d in rows.all()} == {
                (sync, "sections.created")
            }
        _save(browser, tmp_path, "ui-filtered.png")

        # the receiver is fixed; retry one delivery from the page
        status[0] = 204
        target = filtered[0]
        browser.find_element(By.ID, f"retry-{target}").click()
        notice = _wait(browser, "notice")
        assert notice.text == f"Delivery {target} is queued for a new attempt now."
        assert "event_type=sections.created" in browser.current_url  # back to the same view
        await wait_for(lambda: _is(db, target, "succeeded"), timeout=30)
        browser.refresh()
        _wait(browser, "notice")
        assert _shown(browser) == [d for d in filtered if d != target]
        _save(browser, tmp_path, "ui-after-retry.png")


async def _is(db: Database, delivery_id: int, expected: str) -> bool:
    return await _status(db, delivery_id) == expected


async def _disabled(db: Database, subscription_id: str) -> bool:
    async with db.read() as session:
        sub = await session.get(Subscription, subscription_id)
    return sub is not None and not sub.enabled
