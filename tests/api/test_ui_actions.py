"""``/ui`` filters, links and actions over HTTP against a real app and database: filters
narrow the list, a retry from the page re-queues the delivery (database and Redis), recover
and re-enable do what the API does, a POST without the session's CSRF token or from another
origin is refused, and another owner's delivery or subscription cannot be acted on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from arq.connections import ArqRedis

from relay.db import Database
from relay.db.models import Delivery, Subscription
from relay.queue import RedisQueue
from tests.support.config import ADMIN_TOKEN
from tests.support.ui import (
    T0,
    add_failed,
    add_sub,
    csrf_of,
    delivery_ids,
    form_client,
    login,
    mint,
    seed,
)


@pytest.fixture
def queued(queued_api_url: str) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """An admin API client and a form client, on the API that queues in Redis."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        httpx.Client(base_url=queued_api_url, headers=headers, timeout=10) as admin,
        form_client(queued_api_url) as page,
    ):
        yield admin, page


def signed_in(page: httpx.Client, token: str) -> str:
    """Sign in; the CSRF token of the session."""
    assert login(page, token).status_code == 303
    return csrf_of(page.get("/ui").text)


async def load(db: Database, delivery_id: int) -> Delivery:
    async with db.read() as session:
        row = await session.get(Delivery, delivery_id)
    assert row is not None
    return row


async def sub_row(db: Database, subscription_id: str) -> Subscription:
    async with db.read() as session:
        row = await session.get(Subscription, subscription_id)
    assert row is not None
    return row


async def queued_jobs(redis_url: str) -> int:
    redis = ArqRedis.from_url(redis_url)
    try:
        return sum(total for total, _ in (await RedisQueue(redis).depth()).values())
    finally:
        await redis.aclose()


async def test_filters_narrow_the_list(db: Database, browserless: httpx.Client) -> None:
    a, b = await add_sub(db, "alpha"), await add_sub(db, "alpha")
    rows: dict[str, int] = {}
    for n, (sub, event_type, status) in enumerate(
        [
            (a, "users.updated", "failed"),
            (a, "sections.created", "failed"),
            (b, "users.updated", "failed"),
            (b, "users.updated", "retrying"),
            (a, "users.updated", "succeeded"),
        ]
    ):
        name = f"{sub[-4:]}-{event_type}-{status}"
        rows[name] = await add_failed(
            db, sub, f"e{n:023x}", [(500, None, "x")], T0 + timedelta(hours=n), event_type, status
        )
    ids = list(rows.values())
    assert login(browserless, ADMIN_TOKEN).status_code == 303

    def shown(**params: str) -> list[int]:
        page = browserless.get("/ui", params=params)
        assert page.status_code == 200, page.text
        return delivery_ids(page.text)

    failed = [i for name, i in rows.items() if name.endswith("-failed")]
    assert shown() == sorted(failed, reverse=True)  # failed only, newest first
    assert shown(status="any") == sorted(ids, reverse=True)
    assert shown(status="retrying") == [rows[f"{b[-4:]}-users.updated-retrying"]]
    assert shown(status="retrying,succeeded") == [ids[4], ids[3]]
    assert shown(subscription_id=a) == [ids[1], ids[0]]
    assert shown(event_type="sections.created") == [ids[1]]
    # the window bounds created_at: since inclusive, until exclusive; no offset is UTC
    window = {"since": "2024-05-01T13:00", "until": "2024-05-01T15:00"}
    assert shown(status="any", **window) == [ids[2], ids[1]]
    assert shown(subscription_id=b, status="any", event_type="users.updated") == [ids[3], ids[2]]
    # a submitted form's empty fields are no filter at all
    empty = dict.fromkeys(("subscription_id", "status", "event_type", "since", "until"), "")
    assert shown(**empty) == shown()
    # the form shows the filters back, and every link keeps them
    page = browserless.get("/ui", params={"subscription_id": a, "status": "any"}).text
    assert f'name="subscription_id" list="subscription-ids" value="{a}"' in page
    assert '<option value="any" selected>' in page
    page = browserless.get("/ui", params={"status": "any", "event_type": "users.updated"}).text
    kept = f"/ui?subscription_id={b}&amp;status=any&amp;event_type=users.updated"
    assert f'href="{kept}"' in page  # a row's subscription, in the same view

    bad = browserless.get("/ui", params={"event_type": "users"})
    assert bad.status_code == 422
    assert "event_type: expected &lt;record_type&gt;.&lt;action&gt; such as users.updated" in (
        bad.text
    )
    assert 'value="users"' in bad.text  # shown back, to be corrected
    yesterday = browserless.get("/ui", params={"since": "yesterday"})
    assert yesterday.status_code == 422
    assert "since: not an ISO 8601 timestamp: &#x27;yesterday&#x27;" in yesterday.text
    assert browserless.get("/ui", params={"status": "lost"}).status_code == 422
    assert browserless.get("/ui", params={"subscription_id": "a b"}).status_code == 422


async def test_older_pages_keep_the_filters(db: Database, browserless: httpx.Client) -> None:
    a, b = await add_sub(db, "alpha"), await add_sub(db, "alpha")
    for n in range(120):
        await add_failed(db, a if n % 2 else b, f"f{n:023x}", [(500, None, "")])
    assert login(browserless, ADMIN_TOKEN).status_code == 303
    first = browserless.get("/ui", params={"subscription_id": a}).text
    assert len(delivery_ids(first)) == 50
    older = re.search(r'href="([^"]+)" id="older"', first)
    assert older is not None
    assert f"subscription_id={a}" in older.group(1)
    rest = browserless.get(older.group(1).replace("&amp;", "&")).text
    assert len(delivery_ids(rest)) == 10
    async with db.read() as session:
        for delivery_id in delivery_ids(rest):
            row = await session.get(Delivery, delivery_id)
            assert row is not None
            assert row.subscription_id == a


async def test_a_retry_from_the_page_requeues_the_delivery(
    db: Database, redis_url: str, queued: tuple[httpx.Client, httpx.Client]
) -> None:
    admin, page = queued
    ids = await seed(db)
    csrf = signed_in(page, mint(admin, "alpha"))
    before = await queued_jobs(redis_url)
    back = "/ui?" + urlencode({"event_type": "users.updated"})

    done = page.post(f"/ui/deliveries/{ids['xss']}/retry", data={"csrf": csrf, "back": back})
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith(back + "&notice=")
    delivery = await load(db, ids["xss"])
    assert (delivery.status, delivery.manual_retry) == ("retrying", True)
    assert delivery.next_attempt_at is not None
    assert await queued_jobs(redis_url) == before + 1  # queued at once, not left to the reconciler
    shown = page.get(done.headers["location"])
    assert f"Delivery {ids['xss']} is queued for a new attempt now." in shown.text
    assert ids["xss"] not in delivery_ids(shown.text)  # no longer failed
    # the notice cannot be made up: an unsigned one is not shown
    forged = page.get("/ui", params={"notice": "Everything was re-sent."})
    assert "Everything was re-sent" not in forged.text

    # what the API refuses, the page refuses with the same words
    disabled = page.post(f"/ui/deliveries/{ids['plain']}/retry", data={"csrf": csrf})
    assert disabled.status_code == 409
    assert "the subscription is disabled" in disabled.text
    assert (await load(db, ids["plain"])).status == "failed"


async def test_an_action_without_the_sessions_csrf_token_or_from_elsewhere_is_refused(
    db: Database, admin: httpx.Client, api_url: str
) -> None:
    ids = await seed(db)
    token = mint(admin, "alpha")
    actions = [
        f"/ui/deliveries/{ids['xss']}/retry",
        f"/ui/subscriptions/{ids['alpha_disabled']}/enable",
        f"/ui/subscriptions/{ids['alpha_failing']}/recover",
    ]
    with form_client(api_url) as page, form_client(api_url) as other:
        csrf = signed_in(page, token)
        other_csrf = signed_in(other, token)  # the same owner, another session
        assert other_csrf != csrf
        form = {"csrf": csrf, "since": "2024-01-01T00:00"}
        for path in actions:
            for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}):
                refused = page.post(path, data=form, headers=headers)
                assert refused.status_code == 403, path
                assert "must be sent from the relay" in refused.text
            no_origin = httpx.post(
                page.base_url.join(path), data=form, cookies=page.cookies, timeout=10
            )
            assert no_origin.status_code == 403
            for bad in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": other_csrf}):
                stale = page.post(path, data={"since": "2024-01-01T00:00"} | bad)
                assert stale.status_code == 403, (path, bad)
                assert "CSRF token does not belong to this session" in stale.text
            with form_client(api_url) as anonymous:
                assert anonymous.post(path, data=form).status_code == 401
    delivery = await load(db, ids["xss"])
    assert (delivery.status, delivery.manual_retry) == ("failed", False)
    assert not (await sub_row(db, ids["alpha_disabled"])).enabled


async def test_another_owners_delivery_and_subscription_cannot_be_acted_on(
    db: Database, admin: httpx.Client, browserless: httpx.Client
) -> None:
    ids = await seed(db)
    csrf = signed_in(browserless, mint(admin, "alpha"))
    form: dict[str, Any] = {"csrf": csrf, "since": "2024-01-01T00:00"}
    retry = browserless.post(f"/ui/deliveries/{ids['other']}/retry", data=form)
    assert retry.status_code == 404
    assert f"no delivery &#x27;{ids['other']}&#x27;" in retry.text
    for action in ("enable", "recover"):
        refused = browserless.post(f"/ui/subscriptions/{ids['beta']}/{action}", data=form)
        assert refused.status_code == 404, action
        assert f"no subscription &#x27;{ids['beta']}&#x27;" in refused.text
    assert (await load(db, ids["other"])).status == "failed"
    assert not (await sub_row(db, ids["beta"])).enabled
    # nor seen: filtering on it shows nothing, its event page is not found
    page = browserless.get("/ui", params={"subscription_id": ids["beta"], "status": "any"})
    assert delivery_ids(page.text) == []
    assert 'id="no-subscription"' in page.text
    assert browserless.get("/ui/events/b0000000000000000000beta").status_code == 404
    # the admin's session can
    with form_client(str(browserless.base_url)) as root:
        root_csrf = signed_in(root, ADMIN_TOKEN)
        done = root.post(f"/ui/subscriptions/{ids['beta']}/enable", data={"csrf": root_csrf})
        assert done.status_code == 303
    assert (await sub_row(db, ids["beta"])).enabled


async def test_recover_and_re_enable_from_the_page(
    db: Database, redis_url: str, queued: tuple[httpx.Client, httpx.Client]
) -> None:
    admin, page = queued
    ids = await seed(db)
    late = await add_failed(
        db, ids["alpha_failing"], "a0000000000000000000late", [], T0 + timedelta(2)
    )
    csrf = signed_in(page, mint(admin, "alpha"))
    path = f"/ui/subscriptions/{ids['alpha_failing']}/recover"

    missing = page.post(path, data={"csrf": csrf})
    assert missing.status_code == 422
    assert "since: give the start of the window" in missing.text
    backwards = page.post(
        path, data={"csrf": csrf, "since": "2024-05-02T00:00", "until": "2024-05-01T00:00"}
    )
    assert backwards.status_code == 422
    assert "until must be after since" in backwards.text
    # [since, until): the window holds the first failed delivery, not the late one
    window = {"csrf": csrf, "since": "2024-05-01T11:00", "until": "2024-05-02T00:00:00"}
    done = page.post(path, data=window)
    assert done.status_code == 303, done.text
    notice = page.get(done.headers["location"]).text
    assert f"1 failed delivery of {ids['alpha_failing']} queued for a new attempt." in notice
    assert (await load(db, ids["xss"])).status == "retrying"
    assert (await load(db, late)).status == "failed"

    disabled = f"/ui/subscriptions/{ids['alpha_disabled']}/recover"
    refused = page.post(disabled, data={"csrf": csrf, "since": "2024-01-01T00:00"})
    assert refused.status_code == 409
    enabled = page.post(f"/ui/subscriptions/{ids['alpha_disabled']}/enable", data={"csrf": csrf})
    assert enabled.status_code == 303
    sub = await sub_row(db, ids["alpha_disabled"])
    assert (sub.enabled, sub.disabled_reason, sub.failing_since) == (True, None, None)
    assert "is enabled again" in page.get(enabled.headers["location"]).text
    # enabled, it has nothing left to show among the failing ones; the failing one can be
    # recovered from the page
    shown = page.get("/ui").text
    assert f'data-id="{ids["alpha_disabled"]}"' not in shown
    assert f'action="/ui/subscriptions/{ids["alpha_failing"]}/recover"' in shown


async def test_the_event_page_links_an_event_its_deliveries_and_their_subscriptions(
    db: Database, admin: httpx.Client, browserless: httpx.Client
) -> None:
    ids = await seed(db)
    extra = await add_failed(db, ids["alpha_ok"], "a0000000000000000000xss1", [(503, None, "")])
    signed_in(browserless, mint(admin, "alpha"))
    listing = browserless.get("/ui").text
    assert 'href="/ui/events/a0000000000000000000xss1"' in listing  # delivery → event
    page = browserless.get("/ui/events/a0000000000000000000xss1")
    assert page.status_code == 200
    assert 'id="event-id">a0000000000000000000xss1<' in page.text
    assert set(delivery_ids(page.text)) == {ids["xss"], extra}  # event → its deliveries
    for sub in (ids["alpha_failing"], ids["alpha_ok"]):  # → their subscriptions
        assert f'href="/ui?subscription_id={sub}&amp;status=any"' in page.text
    assert "<script" not in page.text
    # a retry from the event page comes back to it
    csrf = csrf_of(page.text)
    back = "/ui/events/a0000000000000000000xss1"
    done = browserless.post(f"/ui/deliveries/{extra}/retry", data={"csrf": csrf, "back": back})
    assert done.headers["location"].startswith(back + "?notice=")
    # and nowhere else: a back field naming another site is not followed
    away = browserless.post(
        f"/ui/deliveries/{ids['xss']}/retry", data={"csrf": csrf, "back": "https://evil.example/"}
    )
    assert away.headers["location"].startswith("/ui?notice=")
    assert browserless.get("/ui/events/" + "f" * 24).status_code == 404
