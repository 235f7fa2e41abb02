"""Unauthenticated operational routes: health, readiness, the API description."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import schemas
from relay.api.context import services
from relay.api.spec import Operation, build_openapi, operation


@operation(Operation("Liveness", "ops", {200: schemas.Health}, auth=False))
async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok", "checks": {}})


@operation(
    Operation(
        "Readiness: the database and (when configured) Redis are reachable",
        "ops",
        {200: schemas.Health},
        errors=(503,),
        auth=False,
    )
)
async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    try:
        await services(request).db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports any failure; it must not raise
        checks["database"] = f"unreachable: {type(exc).__name__}"
    redis = services(request).redis
    if redis is None:
        checks["redis"] = "not configured (deliveries are queued by the workers)"
    else:
        try:
            await asyncio.wait_for(redis.ping(), 2.0)
            checks["redis"] = "ok"
        except Exception as exc:  # any failure means not ready
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" or v.startswith("not configured") for v in checks.values())
    if not ready:
        return JSONResponse(
            {"error": {"code": "unavailable", "message": "not ready: " + str(checks)}},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "checks": checks})


@operation(
    Operation(
        "Prometheus metrics (text exposition format)",
        "ops",
        {200: None},
        auth=False,
        extra={
            "responses": {
                "200": {
                    "description": "Prometheus text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            }
        },
    )
)
async def metrics(request: Request) -> Response:
    return Response(await services(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    spec = request.app.state.openapi
    if spec is None:
        spec = request.app.state.openapi = build_openapi(request.app.routes)
    return JSONResponse(spec)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
]
