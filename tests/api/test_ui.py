"""The read-only ``/ui`` page: sign-in with a token, owner scoping, escaping, CSP, CSRF checks,
pagination — over HTTP, and end to end in headless Chromium driven by selenium."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from relay.api import ui
from relay.db import Database
from relay.db.models import Delivery, DeliveryAttempt, Subscription
from tests.support.config import ADMIN_TOKEN

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
XSS = "<script>alert(1)</script>"
IMG_XSS = "<img src=x onerror=\"document.title='pwned'\">"
INSTALL_HINT = (
    "the /ui browser test needs Chromium and its driver: "
    "apt-get update && apt-get install -y chromium chromium-driver "
    "(and selenium from the dev extra: pip install -e '.[dev]')"
)


async def add_sub(db: Database, owner: str, **fields: Any) -> str:
    sub = Subscription(owner=owner, url=f"http://127.0.0.1:9/{owner}", secret="whsec_x", **fields)
    async with db.write() as session:
        session.add(sub)
    return sub.id


async def add_failed(
    db: Database,
    subscription_id: str,
    event_id: str,
    attempts: list[tuple[int | None, str | None, str]],
    created_at: datetime = T0,
) -> int:
    delivery = Delivery(
        subscription_id=subscription_id,
        event_id=event_id,
        event_type="users.updated",
        status="failed",
        attempts=len(attempts),
        last_status_code=attempts[-1][0] if attempts else None,
        created_at=created_at,
    )
    async with db.write() as session:
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


def mint(admin: httpx.Client, owner: str) -> str:
    response = admin.post("/v1/tokens", json={"owner": owner})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture
def browserless(api_url: str) -> Iterator[httpx.Client]:
    """A cookie-keeping client that posts forms as a page of the relay would."""
    with httpx.Client(base_url=api_url, timeout=10, headers={"Origin": api_url}) as client:
        yield client


def login(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/ui/login", data={"token": token})


async def seed(db: Database) -> dict[str, Any]:
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


# -- over HTTP ---------------------------------------------------------------------------------


def test_the_ui_shows_a_sign_in_form_with_strict_headers(anonymous: httpx.Client) -> None:
    page = anonymous.get("/ui")
    assert page.status_code == 200
    assert 'action="/ui/login"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # falls back to default-src 'none': no script at all
    assert "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text
    css = anonymous.get("/ui/static/ui.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def test_ui_routes_are_not_in_the_openapi_document(anonymous: httpx.Client) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert paths
    assert not [p for p in paths if p.startswith("/ui")]


async def test_sign_in_needs_a_same_origin_post_and_a_valid_token(
    db: Database, admin: httpx.Client, api_url: str
) -> None:
    await seed(db)
    token = mint(admin, "alpha")
    with httpx.Client(base_url=api_url, timeout=10) as client:
        # no Origin nor Referer: refused (login CSRF)
        assert login(client, token).status_code == 403
        foreign = client.post(
            "/ui/login", data={"token": token}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        assert "set-cookie" not in foreign.headers
        null_origin = client.post("/ui/login", data={"token": token}, headers={"Origin": "null"})
        assert null_origin.status_code == 403
        by_referer = client.post(
            "/ui/login", data={"token": "nope"}, headers={"Referer": api_url + "/ui"}
        )
        assert by_referer.status_code == 401  # same-origin Referer is accepted; token is not
        assert "nope" not in by_referer.text

        client.headers["Origin"] = api_url
        assert login(client, "rst_forged.token").status_code == 401
        assert login(client, "").status_code == 401
        ok = login(client, token)
        assert ok.status_code == 303
        assert ok.headers["location"] == "/ui"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(ui.COOKIE + "=")
        lowered = cookie.lower()
        assert "httponly" in lowered
        assert "samesite=strict" in lowered
        assert "path=/ui" in lowered
        assert f"max-age={ui.SESSION_SECONDS}" in lowered
        assert "secure" not in lowered  # plain http here; https sets Secure
        value = client.cookies[ui.COOKIE]
        assert token not in value
        assert token.removeprefix("rst_") not in value
        page = client.get("/ui")
        assert page.status_code == 200
        assert "Signed in as service alpha" in page.text

        # logout needs the same origin too
        refused = client.post("/ui/logout", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert client.get("/ui").text.count("Signed in as") == 1
        out = client.post("/ui/logout")
        assert out.status_code == 303
        assert ui.COOKIE not in client.cookies
        assert 'action="/ui/login"' in client.get("/ui").text
    # a copy of the cookie taken before signing out (a shared machine, a stolen cookie) is
    # signed out too, not valid for the rest of its hour
    with httpx.Client(base_url=api_url, timeout=10, cookies={ui.COOKIE: value}) as copy:
        replay = copy.get("/ui")
        assert "Signed in as" not in replay.text
        assert 'action="/ui/login"' in replay.text


async def test_a_service_session_sees_only_its_owner_and_everything_is_escaped(
    db: Database, admin: httpx.Client, browserless: httpx.Client
) -> None:
    ids = await seed(db)
    assert login(browserless, mint(admin, "alpha")).status_code == 303
    page = browserless.get("/ui").text
    # failing subscriptions: disabled with a reason, or failing_since; not the healthy one
    assert ids["alpha_disabled"] in page
    assert ids["alpha_failing"] in page
    assert ids["alpha_ok"] not in page
    assert ids["beta"] not in page
    assert "beta-disabled" not in page
    # failed deliveries of alpha only, newest first, with their attempts
    assert f'id="delivery-{ids["xss"]}"' in page
    assert f'id="delivery-{ids["plain"]}"' in page
    assert f'id="delivery-{ids["other"]}"' not in page
    assert "beta-only" not in page
    assert page.index(f'id="delivery-{ids["plain"]}"') < page.index(f'id="delivery-{ids["xss"]}"')
    assert "connection refused" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "<img" not in page
    assert "410 &lt;b&gt;Gone&lt;/b&gt;" in page


async def test_the_admin_session_sees_every_owner(db: Database, browserless: httpx.Client) -> None:
    ids = await seed(db)
    assert login(browserless, ADMIN_TOKEN).status_code == 303
    page = browserless.get("/ui").text
    assert "Signed in as admin" in page
    for key in ("alpha_disabled", "alpha_failing", "beta"):
        assert ids[key] in page
    for key in ("xss", "plain", "other"):
        assert f'id="delivery-{ids[key]}"' in page
    assert ADMIN_TOKEN not in browserless.cookies[ui.COOKIE]


async def test_revoking_the_owner_ends_its_sessions(
    db: Database, admin: httpx.Client, browserless: httpx.Client
) -> None:
    await seed(db)
    assert login(browserless, mint(admin, "alpha")).status_code == 303
    assert "Signed in as service alpha" in browserless.get("/ui").text
    assert admin.delete("/v1/tokens/alpha").status_code in (200, 204)
    page = browserless.get("/ui")
    assert "Signed in as" not in page.text
    assert "session has ended" in page.text
    # a token minted after the revocation works again, the old session still does not
    mint(admin, "alpha")
    assert "Signed in as" not in browserless.get("/ui").text


def test_sessions_expire_and_are_bound_to_the_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = ui.SessionCodec("key", "admin-token-1")
    value = codec.for_admin()
    payload = codec.read(value)
    assert payload is not None
    assert codec.is_admin(payload)
    assert "admin-token-1" not in value
    other = ui.SessionCodec("key", "admin-token-2")  # the admin token was changed
    again = other.read(value)
    assert again is not None
    assert not other.is_admin(again)
    assert ui.SessionCodec("other-key", "admin-token-1").read(value) is None
    monkeypatch.setattr(ui.session, "SESSION_SECONDS", -1)
    assert codec.read(value) is None


async def test_failed_deliveries_are_paged_newest_first_fifty_at_a_time(
    db: Database, browserless: httpx.Client
) -> None:
    sub = await add_sub(db, "alpha")
    async with db.write() as session:
        for n in range(120):
            session.add(
                Delivery(
                    subscription_id=sub,
                    event_id=f"{n:024x}",
                    event_type="users.updated",
                    status="failed" if n % 7 else "succeeded",
                    attempts=1,
                    created_at=T0 + timedelta(seconds=n),
                )
            )
    async with db.read() as session:
        failed = list(
            (
                await session.exec(
                    select(Delivery.id)
                    .where(Delivery.status == "failed")
                    .order_by(col(Delivery.id).desc())
                )
            ).all()
        )
    assert login(browserless, ADMIN_TOKEN).status_code == 303
    seen: list[int] = []
    url: str | None = "/ui"
    pages = 0
    while url is not None:
        page = browserless.get(url)
        assert page.status_code == 200
        ids = [int(m) for m in re.findall(r'<tr class="delivery" id="delivery-(\d+)"', page.text)]
        assert len(ids) <= ui.PAGE_SIZE
        seen += ids
        pages += 1
        older = re.search(r'href="(/ui\?before=\d+)" id="older"', page.text)
        url = older.group(1) if older else None
    assert seen == failed
    assert pages == -(-len(failed) // ui.PAGE_SIZE)
    assert browserless.get("/ui?before=x<y").status_code == 400


# -- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
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
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
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


async def test_in_chromium_a_service_token_signs_in_sees_its_failures_and_signs_out(
    db: Database, admin: httpx.Client, api_url: str, chromium: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.wait import WebDriverWait

    def wait_for(element_id: str) -> Any:
        return WebDriverWait(browser, 15).until(
            until.presence_of_element_located((By.ID, element_id))
        )

    ids = await seed(db)
    token = mint(admin, "alpha")
    browser = chromium

    browser.get(api_url + "/ui")
    assert browser.find_elements(By.ID, "signed-in-as") == []
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    assert wait_for("signed-in-as").text == "Signed in as service alpha"
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

    shown = {
        int(row.get_attribute("data-id"))
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.delivery")
    }
    assert shown == {ids["xss"], ids["plain"]}
    subs = {
        row.get_attribute("data-id")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.subscription")
    }
    assert subs == {ids["alpha_disabled"], ids["alpha_failing"]}

    xss_row = browser.find_element(By.ID, f"delivery-{ids['xss']}")
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
    csp_errors = [
        entry
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry.get("message", "")
    ]
    assert csp_errors == []
    screenshot = Path("/tmp/relay-ui.png")
    assert browser.save_screenshot(str(screenshot))

    browser.find_element(By.ID, "logout").click()
    wait_for("token")
    assert browser.find_elements(By.ID, "signed-in-as") == []
    assert browser.get_cookie(ui.COOKIE) is None
    browser.get(api_url + "/ui")
    assert browser.find_elements(By.ID, "signed-in-as") == []
