"""Clever misbehaving while events keep coming: 429 (its reset honoured), 500/502/503, HTML
error pages, truncated JSON, and 401 (a rotated token, fetched again with the app's client
credentials). The relay recovers by itself each time: every event stored once, none skipped,
every delivery made, the district still ``active``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from relay.db.models import WITH_TOKEN, District
from tests.support.scenario import Scenario, ScenarioFactory

#: Injected one kind after the other (each waits for the previous to fire). One of each:
#: consecutive failures back off (jittered, doubling from 1 s), which only costs time here.
FAULTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("429", [{"kind": "429", "reset_in": 1}]),
    ("5xx", [{"kind": k} for k in ("500", "502", "503")]),
    ("html", [{"kind": "html", "status": 200}, {"kind": "html", "status": 502}]),
    ("truncated", [{"kind": "truncated", "count": 2}]),
]
PAGE = {"RELAY_CLEVER_PAGE_SIZE": "20"}


def credentials(run: Scenario) -> dict[str, str]:
    return {
        "RELAY_CLEVER_OAUTH_URL": run.clever_url,
        "CLEVER_CLIENT_ID": run.sim.config.client_id,
        "CLEVER_CLIENT_SECRET": run.sim.config.client_secret,
    }


def add_faults(run: Scenario, rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        httpx.post(run.clever_url + "/_sim/faults", json=rule).raise_for_status()


async def start(run: Scenario, log_level: str = "INFO") -> None:
    """100 events at Clever and 20/s more, one subscription to everything, two workers."""
    await run.add_districts(backlog=100)
    await run.hook("all")
    run.set_event_rate(20)
    run.start_workers(2, log_level)
    await run.wait("events stored", lambda: stored_at_least(run, 50), 30)


async def ride_out(
    run: Scenario,
    what: str,
    disturb: Callable[[], Awaitable[None]] | Callable[[], None],
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """``disturb()``, wait for its faults to fire and for events stored after them; returns
    the Clever requests made from then on."""
    seq = max((r["seq"] for r in run.sim.requests), default=0)
    result = disturb()
    if result is not None:
        await result
    await run.wait(f"the {what} faults to fire", lambda: faults_spent(run), timeout)
    stored = await run.stored_count()
    await run.wait(
        f"events stored after the {what} faults",
        lambda: stored_at_least(run, stored + 20),
        timeout,
    )
    return [r for r in run.sim.requests if r["seq"] > seq]


async def discovery_idle(run: Scenario) -> bool:
    logs = "".join(w.output() for w in run.workers)
    started = logs.count("cron:discover_districts()")
    return started > 0 and started == logs.count("cron:discover_districts \\u25cf")


async def stored_at_least(run: Scenario, n: int) -> bool:
    return await run.stored_count() >= n


async def faults_spent(run: Scenario) -> bool:
    return not run.sim.faults.rules


async def test_clever_errors_are_ridden_out(make_scenario: ScenarioFactory) -> None:
    with make_scenario(seed=31, env=PAGE) as run:
        await start(run)
        fired: dict[str, set[str]] = {}
        for kind, rules in FAULTS:
            after = await ride_out(run, kind, lambda rules=rules: add_faults(run, rules))
            fired[kind] = {str(r["fault"]) for r in after if r["fault"]}
        await run.settle(timeout=60)
        await run.check()
    assert fired == {
        "429": {"429"},
        "5xx": {"500", "502", "503"},
        "html": {"html"},
        "truncated": {"truncated"},
    }


async def test_a_401_with_credentials_fetches_the_token_again(
    make_scenario: ScenarioFactory,
) -> None:
    with make_scenario(seed=37, env=PAGE) as run:
        run.env |= credentials(run)
        district_id = next(iter(run.sim.districts))
        old = run.sim.districts[district_id].token
        await start(run, log_level="DEBUG")  # arq's cron job lines tell discovery's runs
        # Each worker's start-up token discovery must be over, or it (rather than a 401)
        # may be what picks up the rotated token: arq runs it right after the cron queue
        # starts (once per second across workers: the job id is the cron time).
        await run.wait(
            "every worker's cron queue",
            lambda: run.all_logged("Starting worker for 3 functions: cron:"),
            30,
        )
        await asyncio.sleep(1.5)
        await run.wait("start-up token discovery to finish", lambda: discovery_idle(run), 30)

        def rotate() -> None:
            url = f"{run.clever_url}/_sim/districts/{district_id}/rotate-token"
            httpx.post(url).raise_for_status()

        await ride_out(run, "rotated token", rotate)
        await run.settle(timeout=60)
        await run.check()
        async with run.db.read() as session:
            row = await session.get(District, district_id, options=[WITH_TOKEN])
    # the whole log: a request already in flight at the rotation is logged before it
    requests = list(run.sim.requests)
    assert any(r["status"] == 401 for r in requests), "the old token was refused"
    assert any(r["path"] == "/oauth/tokens" and r["status"] == 200 for r in requests)
    assert row is not None
    assert row.token == run.sim.districts[district_id].token != old
    assert row.token_source == "discovered"


async def test_a_spurious_401_with_credentials_is_ridden_out(
    make_scenario: ScenarioFactory,
) -> None:
    """Clever answers 401 once although the token is valid (the simulator's ``401`` fault):
    the relay fetches the token again, finds the same one, and must carry on polling."""
    with make_scenario(seed=41, env=PAGE) as run:
        run.env |= credentials(run)
        await start(run)
        await ride_out(run, "spurious 401", lambda: add_faults(run, [{"kind": "401"}]), timeout=8)
        await run.settle(timeout=20)
        await run.check()
    assert any(r["path"] == "/oauth/tokens" for r in run.sim.requests), "token fetched again"
