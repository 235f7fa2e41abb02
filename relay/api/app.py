"""The Starlette application."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from relay.api.auth import Authenticator, AuthMiddleware, TokenCodec
from relay.api.context import Services
from relay.api.errors import exception_handlers
from relay.api.limits import BodySizeLimitMiddleware
from relay.api.pagination import CursorCodec
from relay.api.routes import districts, ops, subscriptions, tokens
from relay.db import Database
from relay.delivery.targets import TargetPolicy
from relay.secrets import RuntimeSecrets
from relay.settings import Settings


def create_app(
    settings: Settings, runtime: RuntimeSecrets, db: Database | None = None
) -> Starlette:
    database = db or Database(settings.database_url)
    token_codec = TokenCodec(runtime.secret_key)
    svc = Services(
        settings=settings,
        db=database,
        authenticator=Authenticator(runtime.admin_token, token_codec, database),
        tokens=token_codec,
        cursors=CursorCodec(runtime.secret_key),
        target_policy=TargetPolicy.from_env_value(settings.allowed_targets),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if db is None:
                await database.dispose()

    app = Starlette(
        routes=[*ops.routes, *tokens.routes, *districts.routes, *subscriptions.routes],
        middleware=[
            Middleware(AuthMiddleware, authenticator=svc.authenticator),
            Middleware(BodySizeLimitMiddleware),
        ],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.openapi = None
    return app
