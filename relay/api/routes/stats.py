"""``GET /v1/subscriptions/{id}/stats``: how a subscription's deliveries are going.

Read from the hourly rows the record step keeps (``relay.db.stats``), so it costs the same at a
thousand deliveries or ten million: at most one row per hour of the window, plus an index range
over the subscription's waiting deliveries for ``pending``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func
from sqlmodel import col, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import schemas
from relay.api.auth import principal
from relay.api.context import services
from relay.api.errors import ApiError
from relay.api.routes.subscriptions import load_visible
from relay.api.spec import Operation, Query, operation
from relay.db import utcnow
from relay.db.models import WAITING, Delivery
from relay.db.stats import read_stats

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}


def _window(request: Request) -> str:
    window = request.query_params.get("window", "24h")
    if window not in WINDOWS:
        raise ApiError(422, f"window: expected one of {', '.join(WINDOWS)}, got {window!r}")
    return window


@operation(
    Operation(
        "A subscription's delivery statistics over a window",
        "subscriptions",
        {200: schemas.SubscriptionStats},
        query=(
            Query(
                "window",
                {"type": "string", "enum": list(WINDOWS), "default": "24h"},
                "the last hour, day or week (counted in whole hours)",
            ),
        ),
        errors=(404, 422),
        description="Counts are of attempts made in the window (from the start of the hour "
        "it begins in); p50_ms/p95_ms are estimated from a duration histogram; pending is "
        "now; last_success_at/last_failure_at are the latest ever kept, whatever the window.",
    )
)
async def subscription_stats(request: Request) -> Response:
    svc, who = services(request), principal(request)
    window = _window(request)
    sub = await load_visible(svc, who, request.path_params["subscription_id"])
    now = utcnow()
    async with svc.db.read() as session:
        stats = await read_stats(await session.connection(), sub.id, WINDOWS[window], now)
        pending = (
            await session.exec(
                select(func.count())
                .select_from(Delivery)
                .where(col(Delivery.subscription_id) == sub.id)
                .where(col(Delivery.status).in_(WAITING))
            )
        ).one()
    out = schemas.SubscriptionStats(
        subscription_id=sub.id,
        window=window,
        since=now - WINDOWS[window],
        attempts=stats.attempts,
        succeeded=stats.succeeded,
        failed=stats.failed,
        success_rate=stats.success_rate,
        p50_ms=stats.percentile_ms(0.5),
        p95_ms=stats.percentile_ms(0.95),
        pending=int(pending),
        deliveries_failed=stats.deliveries_failed,
        last_success_at=stats.last_success_at,
        last_failure_at=stats.last_failure_at,
    )
    return JSONResponse(out.model_dump(mode="json"))


routes = [Route("/v1/subscriptions/{subscription_id}/stats", subscription_stats, methods=["GET"])]
