"""The Starlette application."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from relay.api import docs, ui
from relay.api.auth import Authenticator, AuthMiddleware, TokenCodec
from relay.api.context import Services
from relay.api.errors import exception_handlers
from relay.api.limits import (
    BodySizeLimitMiddleware,
    LoadSheddingMiddleware,
    RateLimitMiddleware,
    RejectNulMiddleware,
    TokenBuckets,
)
from relay.api.metrics import MetricsEndpoint
from relay.api.pagination import CursorCodec
from relay.api.routes import (
    deliveries,
    districts,
    events,
    ops,
    records,
    redelivery,
    stats,
    subscriptions,
    tokens,
)
from relay.api.spec import merge_by_path
from relay.db import Database, crypto
from relay.delivery.sender import WebhookSender
from relay.queue import RedisQueue, redis_client
from relay.queue.gates import Gates
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from relay.tuning import ApiTuning


def _middleware(authenticator: Authenticator, limits: ApiTuning) -> list[Middleware]:
    """Outermost first: shed load before any work, authenticate before anything else is
    looked at (so a bad token is a 401 whatever the request), then the per-token rate and
    the shape of the request (``relay.api.limits``)."""
    return [
        Middleware(LoadSheddingMiddleware, max_in_flight=limits.max_in_flight),
        Middleware(AuthMiddleware, authenticator=authenticator),
        Middleware(RateLimitMiddleware, rate=limits.per_token_rate, burst=limits.per_token_burst),
        Middleware(BodySizeLimitMiddleware),
        Middleware(RejectNulMiddleware),
    ]


def create_app(
    settings: Settings,
    runtime: RuntimeSecrets,
    db: Database | None = None,
    redis_url: str | None = None,
    *,
    process_counters: bool = False,
    check_keys: bool = True,
) -> Starlette:
    """``redis_url``: where to queue deliveries the API creates or resumes (retries, re-enabled
    subscriptions) at once; without it the reconciler queues them within seconds.
    ``process_counters``: ``/metrics`` adds this process's counters (``relay run``, where a
    worker shares the process). ``check_keys``: at start-up, log whether the encryption keys
    read a sample of what is stored (``crypto.check_keys``; ``relay run``'s worker does it)."""
    limits, policy = settings.tuning.api, settings.target_policy
    crypto.use(runtime.keyring)
    database = db or Database(settings.database_url, pool_timeout=limits.pool_timeout)
    redis = redis_client(redis_url) if redis_url else None
    queue = RedisQueue(redis) if redis is not None else None
    token_codec = TokenCodec(runtime.secret_key)
    svc = Services(
        settings=settings,
        db=database,
        authenticator=Authenticator(runtime.admin_token, token_codec, database),
        tokens=token_codec,
        cursors=CursorCodec(runtime.secret_key),
        target_policy=policy,
        sender=WebhookSender(timeout=settings.delivery_timeout, policy=policy),
        metrics=MetricsEndpoint(database, queue, process_counters=process_counters),
        test_sends=TokenBuckets(limits.test_rate, limits.test_burst),
        redis=redis,
        queue=queue,
        gates=None if redis is None else Gates(redis, lease=settings.tuning.timeouts.job),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # What exists at start-up (modules, SQLAlchemy's metadata, the routes) lives as long
        # as the process: keep it out of the collector's full passes, which otherwise took
        # ~50 ms now and then in the middle of a request (bench/observability.py).
        gc.freeze()
        if check_keys:  # a replica with a wrong key says so at once (and still starts)
            await crypto.check_keys(database.engine, "api")
        async with svc.sender:
            try:
                yield
            finally:
                if redis is not None:
                    await redis.aclose()
                if db is None:
                    await database.dispose()

    app = Starlette(
        routes=merge_by_path(
            [
                *ops.routes,
                *docs.routes,
                *tokens.routes,
                *districts.routes,
                *subscriptions.routes,
                *stats.routes,
                *deliveries.routes,
                *events.routes,
                *records.routes,
                *redelivery.routes,
                *ui.routes(runtime),
            ]
        ),
        middleware=_middleware(svc.authenticator, limits),
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.openapi = None
    return app
