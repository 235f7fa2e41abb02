"""Subscriptions: where matching events are delivered. A service token sees only its own.

A subscription is read without its secrets (``relay.db.models``), so one whose secret this
process's keys cannot decrypt is shown, changed and deleted like any other. The writes lock the
row they change (``FOR UPDATE``; SQLite's write transaction holds the database): a PATCH or a
rotation racing a DELETE of the same subscription answers 404 once it is gone, never 500.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay._exceptions import SecretUnreadable, TargetNotAllowed
from relay.api import schemas
from relay.api.auth import Principal, principal
from relay.api.context import Services, read_json, services
from relay.api.errors import ApiError
from relay.api.limits import retry_after
from relay.api.pagination import parse_limit
from relay.api.spec import CURSOR, LIMIT, Operation, Query, operation
from relay.db import chains, crypto, utcnow
from relay.db.models import WAITING, Delivery, DeliveryStatus, Subscription
from relay.db.tables import table_of
from relay.delivery.attempt import SigningSecrets
from relay.delivery.bootstrap import request_bootstrap
from relay.delivery.probe import record_test, send_test
from relay.delivery.signing import generate_secret
from relay.delivery.targets import check_target_url
from relay.queue import Job, next_attempts

SECRET_OVERLAP = timedelta(hours=24)

logger = logging.getLogger("relay.api")


def subscription_fields(sub: Subscription) -> dict[str, Any]:
    return schemas.Subscription.model_validate(sub, from_attributes=True).model_dump(mode="json")


def _with_secret(sub: Subscription) -> dict[str, Any]:
    return subscription_fields(sub) | {"secret": sub.secret}


async def _check_target(svc: Services, url: str) -> list[str]:
    """403 for a target the policy refuses, 422 for a malformed URL; otherwise the warnings
    (a name that does not resolve)."""
    try:
        return await check_target_url(url, svc.target_policy)
    except TargetNotAllowed as exc:  # well formed, but where this relay may not send
        raise ApiError(403, f"url: {exc}") from None
    except ValueError as exc:
        raise ApiError(422, f"url: {exc}") from None


def visible_or_404(sub: Subscription | None, who: Principal, subscription_id: str) -> Subscription:
    """404 alike for a subscription that does not exist and one of another owner: a service
    token must not learn that another owner's id exists."""
    if sub is None or not (who.is_admin or sub.owner == who.owner):
        raise ApiError(404, f"no subscription {subscription_id!r}")
    return sub


async def load_visible(svc: Services, who: Principal, subscription_id: str) -> Subscription:
    async with svc.db.read() as session:
        sub = await session.get(Subscription, subscription_id)
    return visible_or_404(sub, who, subscription_id)


async def lock_visible(session: AsyncSession, who: Principal, subscription_id: str) -> Subscription:
    """The subscription, locked for the caller's write transaction: a concurrent PATCH,
    rotation or DELETE waits for it, and one that deleted it first leaves a 404 here (an
    unlocked read then write answered 500 when the row went between the two)."""
    sub = await session.get(Subscription, subscription_id, with_for_update=True)
    return visible_or_404(sub, who, subscription_id)


_SECRETS = table_of(Subscription)
#: a subscription's signing secrets as stored: decrypted by the caller, which says what an
#: unreadable one means for it
_STORED_SECRETS = sa.select(
    crypto.as_stored(_SECRETS.c.secret),
    crypto.as_stored(_SECRETS.c.previous_secret),
    _SECRETS.c.previous_secret_expires_at,
).where(_SECRETS.c.id == sa.bindparam("b_id"))

UNREADABLE = (
    "its signing secret cannot be decrypted with this API process's RELAY_ENCRYPTION_KEY "
    "(it was written with a key this process does not have): set a new one with "
    "rotate-secret or PATCH secret, or add that key"
)


async def _signing_secrets(session: AsyncSession, subscription_id: str) -> SigningSecrets | None:
    conn = await session.connection()
    row = (await conn.execute(_STORED_SECRETS, {"b_id": subscription_id})).first()
    return None if row is None else SigningSecrets(row[0], row[1], row[2])


@operation(
    Operation(
        "Create a subscription",
        "subscriptions",
        {201: schemas.SubscriptionCreated},
        request=schemas.SubscriptionCreate,
        errors=(403, 409),
        description="The response carries the signing secret; it is never shown again "
        "except by rotate-secret. The URL's host is resolved now: one that does not resolve "
        "is accepted (DNS can fail for a moment, internal names may resolve only where the "
        "workers run) with a line in warnings; every delivery resolves and checks it again. "
        "An owner has at most RELAY_MAX_SUBSCRIPTIONS_PER_OWNER subscriptions (default "
        "1000): 409 quota_exceeded beyond.",
    )
)
async def create_subscription(request: Request) -> Response:
    who = principal(request)
    svc = services(request)
    body = await read_json(request, schemas.SubscriptionCreate)
    if not who.is_admin and body.owner not in (None, who.owner):
        raise ApiError(403, "owner: a service token can only create its own subscriptions")
    warnings = await _check_target(svc, body.url)
    sub = Subscription(
        owner=body.owner or who.owner,
        url=body.url,
        description=body.description,
        record_types=list(body.record_types or []),
        actions=list(body.actions or []),
        schools=body.schools or [],
        districts=body.districts or [],
        roles=list(body.roles or []),
        changed=body.changed or [],
        secret=body.secret or generate_secret(),
        enabled=body.enabled,
        ordered=body.ordered,
        max_in_flight=body.max_in_flight,
        max_per_second=body.max_per_second,
    )
    shown: dict[str, Any] = {"warnings": warnings}
    async with svc.db.write() as session:
        await _check_quota(session, svc, sub.owner)
        session.add(sub)
        if body.bootstrap:
            await session.flush()
            shown["bootstrap"] = {"requeued": await request_bootstrap(session, sub)}
    return JSONResponse(_with_secret(sub) | shown, status_code=201)


async def _check_quota(session: AsyncSession, svc: Services, owner: str) -> None:
    """One owner's subscriptions are bounded (RELAY_MAX_SUBSCRIPTIONS_PER_OWNER): each costs
    every worker gate checks and fan-out matching, so one team cannot crowd out the others."""
    quota = svc.settings.max_subscriptions_per_owner
    held = await session.scalar(
        select(func.count()).select_from(Subscription).where(Subscription.owner == owner)
    )
    if (held or 0) >= quota:
        raise ApiError(
            409,
            f"owner {owner!r} has {held} subscriptions, the most this relay allows "
            f"(RELAY_MAX_SUBSCRIPTIONS_PER_OWNER={quota}): delete some first",
            code="quota_exceeded",
        )


@operation(
    Operation(
        "List subscriptions",
        "subscriptions",
        {200: schemas.SubscriptionList},
        query=(LIMIT, CURSOR, Query("owner", {"type": "string"}, "admin only: one owner's")),
    )
)
async def list_subscriptions(request: Request) -> Response:
    who = principal(request)
    svc = services(request)
    limit = parse_limit(request)
    query = select(Subscription).order_by(col(Subscription.id)).limit(limit + 1)
    if not who.is_admin:
        query = query.where(Subscription.owner == who.owner)
    elif owner := request.query_params.get("owner"):
        query = query.where(Subscription.owner == owner)
    if cursor := request.query_params.get("cursor"):
        after = str(svc.cursors.decode("subscriptions", cursor))
        query = query.where(col(Subscription.id) > after)
    async with svc.db.read() as session:
        rows = list((await session.exec(query)).all())
    next_cursor = None
    if len(rows) > limit:
        next_cursor = svc.cursors.encode("subscriptions", rows[limit - 1].id)
    return JSONResponse(
        {"data": [subscription_fields(s) for s in rows[:limit]], "next_cursor": next_cursor}
    )


@operation(
    Operation("Show a subscription", "subscriptions", {200: schemas.Subscription}, errors=(404,))
)
async def get_subscription(request: Request) -> Response:
    sub = await load_visible(
        services(request), principal(request), request.path_params["subscription_id"]
    )
    return JSONResponse(subscription_fields(sub))


@operation(
    Operation(
        "Change a subscription's URL, filters or enabled state",
        "subscriptions",
        {200: schemas.SubscriptionChanged},
        request=schemas.SubscriptionUpdate,
        errors=(404, 409),
        description="Setting enabled to true re-enables a subscription the relay disabled; "
        "deliveries parked while it was disabled are sent again within the reconcile interval. "
        "A new URL is checked as at creation (warnings: a host that does not resolve). "
        "Setting enabled to false returns once no attempt is in flight (as DELETE does). "
        "A new secret replaces the current one at once, with no overlap (rotate-secret keeps "
        "the old one signing for 24 h); it is not shown in the response. A subscription "
        "deleted meanwhile is 404.",
    )
)
async def update_subscription(request: Request) -> Response:
    who, svc = principal(request), services(request)
    subscription_id = request.path_params["subscription_id"]
    await load_visible(svc, who, subscription_id)
    body = await read_json(request, schemas.SubscriptionUpdate)
    warnings = [] if body.url is None else await _check_target(svc, body.url)
    sub = await apply_update(svc, who, subscription_id, body)
    return JSONResponse(subscription_fields(sub) | {"warnings": warnings})


async def apply_update(
    svc: Services, who: Principal, subscription_id: str, body: schemas.SubscriptionUpdate
) -> Subscription:
    """The fields ``body`` sets, applied (also ``relay.api.actions.enable_subscription``):
    enabling clears the disabled reason and the failing streak; no longer ordered releases
    what waited for its record's previous event; a new secret replaces the current one at
    once (the previous one stops signing). A new URL is the caller's to check first
    (``_check_target``: 403/422, and its warnings)."""
    async with svc.db.write() as session:
        sub = await lock_visible(session, who, subscription_id)
        for name in body.model_fields_set:
            value = getattr(body, name)
            if name in ("record_types", "actions", "schools", "districts", "roles", "changed"):
                value = value or []
            if value is not None or name in ("description", "max_per_second"):
                setattr(sub, name, value)
        if body.secret is not None:
            sub.previous_secret = sub.previous_secret_expires_at = None
        if body.enabled is not None:
            sub.disabled_reason = None
            sub.failing_since = None
        sub.updated_at = now = utcnow()
        session.add(sub)
        released = [] if sub.ordered else await _release_waiting(session, sub.id, now)
    if body.enabled is False:
        await _stop_sending(svc, subscription_id)
    elif body.enabled:
        await _resume_sending(svc, subscription_id)
    if svc.queue is not None and released:
        await svc.queue.enqueue(released)
    return sub


async def _stop_sending(svc: Services, subscription_id: str) -> None:
    """Once this returns, no attempt to the subscription starts (and none is in flight): its
    gate is closed, then the attempts already past it are waited for (each ends within the
    delivery timeout). Called after the commit that cancelled or parked its deliveries."""
    if svc.gates is None:
        return
    try:
        await svc.gates.close(subscription_id)
        await svc.gates.wait_until_idle(subscription_id, within=svc.settings.delivery_timeout + 1)
    except (RedisError, OSError) as exc:
        # the database already says so: a job that loads the subscription sends nothing
        logger.warning(
            "could not close the subscription's gate",
            extra={"subscription_id": subscription_id, "error": type(exc).__name__},
        )


async def _resume_sending(svc: Services, subscription_id: str) -> None:
    if svc.gates is None:
        return
    try:
        await svc.gates.open(subscription_id)
    except (RedisError, OSError) as exc:
        logger.warning(
            "could not open the subscription's gate",
            extra={"subscription_id": subscription_id, "error": type(exc).__name__},
        )


async def _release_waiting(session: AsyncSession, subscription_id: str, now: datetime) -> list[Job]:
    """No longer ordered: what waited for its record's previous event is due now."""
    released = await chains.release_subscription(await session.connection(), subscription_id, now)
    return next_attempts(released, now)


@operation(
    Operation(
        "Delete a subscription (its pending deliveries are cancelled)",
        "subscriptions",
        {204: None},
        errors=(404,),
        description="Once this returns, no attempt to the subscription starts and none is in "
        "flight: it waits for attempts already under way (at most the delivery timeout).",
    )
)
async def delete_subscription(request: Request) -> Response:
    who, svc = principal(request), services(request)
    subscription_id = request.path_params["subscription_id"]
    async with svc.db.write() as session:
        sub = await lock_visible(session, who, subscription_id)
        await session.delete(sub)
        await session.exec(
            update(Delivery)
            .where(col(Delivery.subscription_id) == subscription_id)
            .where(col(Delivery.status).in_(WAITING))
            .values(status=DeliveryStatus.CANCELLED, next_attempt_at=None, updated_at=utcnow())
        )
    await _stop_sending(svc, subscription_id)
    return Response(status_code=204)


@operation(
    Operation(
        "Rotate the signing secret (the old one keeps signing for 24 h)",
        "subscriptions",
        {200: schemas.SubscriptionWithSecret},
        errors=(404, 409),
        description="A current secret that cannot be decrypted (written with an encryption "
        "key this relay does not have) cannot sign either: it is replaced with no overlap.",
    )
)
async def rotate_secret(request: Request) -> Response:
    who, svc = principal(request), services(request)
    subscription_id = request.path_params["subscription_id"]
    async with svc.db.write() as session:
        sub = await lock_visible(session, who, subscription_id)
        stored = await _signing_secrets(session, subscription_id)
        assert stored is not None  # the row is locked
        now = utcnow()
        try:
            previous: str | None = crypto.keyring().decrypt(stored.secret)
        except SecretUnreadable:
            previous = None  # nobody can sign with it: the new secret alone signs, at once
        sub.previous_secret = previous
        sub.previous_secret_expires_at = None if previous is None else now + SECRET_OVERLAP
        sub.secret = generate_secret()
        sub.updated_at = now
        session.add(sub)
    return JSONResponse(_with_secret(sub))


@operation(
    Operation(
        "Send a relay.test event to the subscription now",
        "subscriptions",
        {200: schemas.TestAttempt},
        errors=(404, 409),
        description="Signed like every delivery (webhook-id is the test event's id). The "
        "attempt is returned and recorded: the relay.test event is in the event log and its "
        "delivery (delivery_id, already succeeded or failed, one attempt with trigger 'test') "
        "in the delivery log; it is never retried or recovered (send another test). Works on "
        "a disabled subscription too. At most one a second per owner (bursts of 10), else "
        "429 with Retry-After. 409 secret_unreadable: the signing secret cannot be decrypted "
        "with this relay's encryption keys (set a new one).",
    )
)
async def test_subscription(request: Request) -> Response:
    svc, who = services(request), principal(request)
    subscription_id = request.path_params["subscription_id"]
    async with svc.db.read() as session:
        sub = visible_or_404(await session.get(Subscription, subscription_id), who, subscription_id)
        stored = await _signing_secrets(session, subscription_id)
    if (wait := svc.test_sends.take(who.owner)) > 0:
        raise ApiError(
            429,
            f"too many test sends for {who.owner!r}: {svc.test_sends.describe()}",
            headers=retry_after(wait),
        )
    if stored is None:  # deleted between the two reads
        raise ApiError(404, f"no subscription {subscription_id!r}")
    now = utcnow()
    try:
        secrets = stored.active(now)
    except SecretUnreadable:
        raise ApiError(409, UNREADABLE, code="secret_unreadable") from None
    event_id, body, outcome = await send_test(svc.sender, sub.url, secrets, sub.id, now)
    delivery_id = await record_test(svc.db, sub, event_id, body, outcome)
    attempt = schemas.TestAttempt(
        webhook_id=event_id,
        delivery_id=delivery_id,
        attempted_at=now,
        succeeded=outcome.succeeded,
        status_code=outcome.status_code,
        duration_ms=outcome.duration_ms,
        error=outcome.error,
        response_excerpt=outcome.response_excerpt,
    )
    return JSONResponse(attempt.model_dump(mode="json"))


routes = [
    Route("/v1/subscriptions", create_subscription, methods=["POST"]),
    Route("/v1/subscriptions", list_subscriptions, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}", get_subscription, methods=["GET"]),
    Route("/v1/subscriptions/{subscription_id}", update_subscription, methods=["PATCH"]),
    Route("/v1/subscriptions/{subscription_id}", delete_subscription, methods=["DELETE"]),
    Route("/v1/subscriptions/{subscription_id}/rotate-secret", rotate_secret, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/test", test_subscription, methods=["POST"]),
]
