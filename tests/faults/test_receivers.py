"""Receivers that misbehave, all at once, with two workers: they fail (500) then recover, hang
past the timeout, redirect (302, never followed), answer 429 with Retry-After, answer 410
(the subscription is disabled), and one refuses connections forever (a closed port) and never
recovers: its deliveries end ``failed`` with every scheduled attempt recorded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlmodel import col, select

from relay.db.models import Delivery, DeliveryAttempt
from tests.support.receiver import Receiver
from tests.support.scenario import Answer, ScenarioFactory, attempt_times, attempts_of
from tests.support.servers import serve


def fails_twice(k: int) -> Answer:
    return (500 if k < 2 else 204), {}, 0.0


def hangs_once() -> Callable[[int], Answer]:
    """The first request of each of the first four events hangs past RELAY_DELIVERY_TIMEOUT
    (1 s); every other request is answered at once. Not the first request of every event:
    that keeps the subscription's circuit open by chance rather than by fault, since each
    time a fresh delivery is drawn as the probe it times out and the circuit stays open
    twice as long (10, 20, 40 s...), past this test's minute (a CI run failed so: 0 of 40
    delivered). The circuit has tests of its own (tests/queue/test_gates.py)."""
    hangs = 4

    def answer(k: int) -> Answer:
        nonlocal hangs
        if k == 0 and hangs > 0:
            hangs -= 1
            return 204, {}, 2.5
        return 204, {}, 0.0

    return answer


def rate_limits_once(k: int) -> Answer:
    return (429, {"Retry-After": "1"}, 0.0) if k == 0 else (204, {}, 0.0)


def gone(k: int) -> Answer:
    return 410, {}, 0.0


async def test_misbehaving_receivers_lose_nothing(make_scenario: ScenarioFactory) -> None:
    target = Receiver()  # where the redirect points: must never be reached
    with serve(target.app()) as elsewhere, make_scenario(seed=23) as run:

        def redirects_once(k: int) -> Answer:
            return (302, {"Location": elsewhere.url + "/moved"}, 0.0) if k == 0 else (204, {}, 0.0)

        await run.add_districts(backlog=40)
        await run.hook("fails-then-recovers", answer=fails_twice)
        hang = await run.hook("hangs-past-timeout", answer=hangs_once())
        await run.hook("redirects", answer=redirects_once)
        limited = await run.hook("429-retry-after", answer=rate_limits_once)
        await run.hook("gone-410", expect="gone", answer=gone)
        refused = await run.hook("refused-forever", expect="failed", closed_port=True)
        run.start_workers(2)
        await run.settle(timeout=60)
        await run.check()
        db = run.db

    assert target.received == [], "a 302 was followed"
    # The hang and the 429 each cost one recorded failed attempt before success.
    for hook, code in ((hang, None), (limited, 429)):
        attempts = await attempts_of(db, hook)
        firsts = [a for a in attempts if a.status_code == code]
        assert firsts, f"{hook.name}: the failed first attempts are on record"
    hang_errors = {a.error for a in await attempts_of(db, hang) if a.status_code is None}
    assert any("timeout" in (e or "").lower() or "timed out" in (e or "") for e in hang_errors), (
        hang_errors
    )
    # Retry-After: 1 was honoured (the schedule alone would retry after 0.3 s ± 20 %).
    # Only where the 429 is on record: an attempt whose job outlived its job timeout is
    # sent again without its first answer recorded (a known issue).
    retried = [t for t in attempt_times(await attempts_of(db, limited)).values() if len(t) > 1]
    assert retried, f"{limited.name}: no delivery shows its 429 and the retry after it"
    for times in retried:
        assert times[1] - times[0] >= timedelta(seconds=0.9), times
    # The closed port: every attempt recorded with its error.
    async with db.read() as session:
        rows = (
            await session.exec(
                select(DeliveryAttempt)
                .join(Delivery, col(Delivery.id) == col(DeliveryAttempt.delivery_id))
                .where(Delivery.subscription_id == refused.id)
            )
        ).all()
    assert rows, f"{refused.name}: no attempt on record"
    assert all("refused" in (a.error or "") for a in rows), {a.error for a in rows}
