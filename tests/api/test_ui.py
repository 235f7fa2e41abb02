"""``/ui`` over HTTP: sign-in with a token, sessions, owner scoping, escaping, CSP, the
Origin check on sign-in and sign-out, paging. Actions and filters: ``test_ui_actions.py``; a
real browser: ``test_ui_browser.py``."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlmodel import col, select

from relay.api import ui
from relay.db import Database
from relay.db.models import Delivery
from tests.support.config import ADMIN_TOKEN
from tests.support.ui import T0, add_sub, delivery_ids, login, mint, seed

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


def test_the_page_is_documented_in_openapi_but_not_its_form_targets(
    anonymous: httpx.Client,
) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert [p for p in paths if p.startswith("/ui")] == ["/ui"]
    get = paths["/ui"]["get"]
    assert list(paths["/ui"]) == ["get"]
    assert get["tags"] == ["ui"]
    assert "security" not in get  # a browser signs in with a form, not a bearer header
    assert set(get["responses"]["200"]["content"]) == {"text/html"}
    assert {p["name"] for p in get["parameters"]} == {
        "subscription_id",
        "status",
        "event_type",
        "since",
        "until",
    }


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
        ids = delivery_ids(page.text)
        assert len(ids) <= ui.PAGE_SIZE
        seen += ids
        pages += 1
        older = re.search(r'href="(/ui\?before=\d+)" id="older"', page.text)
        url = older.group(1) if older else None
    assert seen == failed
    assert pages == -(-len(failed) // ui.PAGE_SIZE)
    assert browserless.get("/ui?before=x<y").status_code == 400
