"""Two writes to one row at once answer 404 or 409, never 500 (issue 26, item 6): a PATCH or a
rotate-secret racing a DELETE of the same subscription, a PATCH racing a DELETE of the same
district. Against a real server (uvicorn), the two requests sent together, 30 rounds each.

Before the fix, the write read the row, the DELETE committed, and the write's UPDATE matched
nothing: SQLAlchemy's ``StaleDataError``, a 500 (11 in 30 rounds when it was found, on
PostgreSQL; SQLite's write transactions already take turns)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx

from tests.support.config import ADMIN_TOKEN

ROUNDS = 30


async def _race(
    api_url: str,
    create: Callable[[httpx.Client, int], str],
    write: tuple[str, str, dict[str, object] | None],
) -> Counter[tuple[str, int]]:
    """``ROUNDS`` rounds of ``write`` (method, path template, JSON body) racing a DELETE of
    the row ``create`` made for the round; every answer, counted."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    seen: Counter[tuple[str, int]] = Counter()
    method, template, body = write
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as admin:
        async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as client:
            for n in range(ROUNDS):
                path = template.format(id=create(admin, n))
                changed, deleted = await asyncio.gather(
                    client.request(method, path, json=body),
                    client.delete(path.removesuffix("/rotate-secret")),
                )
                seen[(method, changed.status_code)] += 1
                seen[("DELETE", deleted.status_code)] += 1
    return seen


def _subscription(admin: httpx.Client, n: int) -> str:
    created = admin.post("/v1/subscriptions", json={"url": f"http://127.0.0.1:9/{n}"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _district(admin: httpx.Client, n: int) -> str:
    created = admin.post("/v1/districts", json={"id": f"race-{n}", "token": f"token-{n}"})
    assert created.status_code == 201, created.text
    return f"race-{n}"


def _check(seen: Counter[tuple[str, int]], write_ok: int, method: str) -> None:
    allowed = {(method, write_ok), (method, 404), (method, 409), ("DELETE", 204), ("DELETE", 404)}
    assert set(seen) <= allowed, seen
    assert seen[("DELETE", 204)] == ROUNDS, seen  # every row was deleted, once


async def test_patch_racing_delete_of_a_subscription_never_answers_500(api_url: str) -> None:
    write = ("PATCH", "/v1/subscriptions/{id}", {"description": "raced", "max_in_flight": 3})
    seen = await _race(api_url, _subscription, write)
    print(f"\nPATCH vs DELETE: {dict(seen)}")
    _check(seen, 200, "PATCH")


async def test_rotate_racing_delete_of_a_subscription_never_answers_500(api_url: str) -> None:
    write = ("POST", "/v1/subscriptions/{id}/rotate-secret", None)
    seen = await _race(api_url, _subscription, write)
    print(f"\nrotate-secret vs DELETE: {dict(seen)}")
    _check(seen, 200, "POST")


async def test_patch_racing_delete_of_a_district_never_answers_500(api_url: str) -> None:
    write = ("PATCH", "/v1/districts/{id}", {"name": "raced", "token": "new-token"})
    seen = await _race(api_url, _district, write)
    print(f"\ndistrict PATCH vs DELETE: {dict(seen)}")
    _check(seen, 200, "PATCH")
