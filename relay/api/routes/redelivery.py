"""Re-sending: one delivery now, or a subscription's failed deliveries over a time window."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import AwareDatetime, BaseModel, field_validator, model_validator
from sqlmodel import col
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import schemas
from relay.api.auth import principal
from relay.api.context import Services, read_json, services
from relay.api.errors import ApiError
from relay.api.routes.deliveries import load_visible_delivery
from relay.api.routes.subscriptions import load_visible
from relay.api.spec import Operation, operation
from relay.db import utcnow
from relay.db.models import Delivery, DeliveryStatus, Subscription
from relay.delivery.probe import TEST_EVENT_TYPE
from relay.delivery.redeliver import request_redelivery
from relay.delivery.replay import request_replay
from relay.queue import Job


class Requeued(BaseModel):
    requeued: int


class RetryAccepted(BaseModel):
    id: int
    status: str
    next_attempt_at: datetime


class RecoverRequest(schemas.RequestBody):
    since: AwareDatetime
    until: AwareDatetime | None = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_string(cls, value: object) -> object:
        example = "an ISO 8601 timestamp with an offset, e.g. 2026-11-26T00:00:00Z"
        if value is None:
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be {example}")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not {example}: {value!r}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} has no offset; give {example}")
        try:
            parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+14:00 is before the first representable UTC
            raise ValueError(f"{value!r} is outside the times the relay can store") from None
        return value

    @model_validator(mode="after")
    def _window(self) -> RecoverRequest:
        if self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


async def _enqueue(svc: Services, due: list[Job]) -> None:
    if svc.queue is not None and due:
        await svc.queue.enqueue(due)


def _require_enabled(subscription: Subscription | None) -> None:
    if subscription is not None and not subscription.enabled:
        raise ApiError(409, "the subscription is disabled; enable it (PATCH enabled=true) first")


@operation(
    Operation(
        "Send a delivery again now",
        "deliveries",
        {202: RetryAccepted},
        errors=(404, 409),
        description="A new attempt, queued at once and counted apart from the retry "
        "schedule: if it fails, the delivery goes back to where the schedule had it. A "
        "relay.test delivery is not retried (409): send another test.",
    )
)
async def retry_delivery(request: Request) -> Response:
    svc = services(request)
    delivery = await load_visible_delivery(
        svc, principal(request), request.path_params["delivery_id"]
    )
    if delivery.status == DeliveryStatus.CANCELLED:
        raise ApiError(409, "the delivery was cancelled: its subscription no longer exists")
    if delivery.event_type == TEST_EVENT_TYPE:
        raise ApiError(
            409,
            "a relay.test delivery is not sent again; send a new test with POST "
            f"/v1/subscriptions/{delivery.subscription_id}/test",
        )
    now = utcnow()
    async with svc.db.write() as session:
        _require_enabled(await session.get(Subscription, delivery.subscription_id))
        marked, due = await request_redelivery(
            session,
            now,
            col(Delivery.id) == delivery.id,
            col(Delivery.attempts) == delivery.attempts,
        )
    if not marked:
        raise ApiError(409, "the delivery changed while the retry was requested; try again")
    await _enqueue(svc, due)
    accepted = RetryAccepted(id=delivery.id or 0, status="retrying", next_attempt_at=now)
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


@operation(
    Operation(
        "Re-send a subscription's failed deliveries created in a time window",
        "subscriptions",
        {202: Requeued},
        request=RecoverRequest,
        errors=(404, 409),
        description="Every failed delivery of the subscription created at or after since "
        "(and before until, default now) gets a new attempt; they are queued in the "
        "background and the count is returned.",
    )
)
async def recover(request: Request) -> Response:
    svc = services(request)
    sub = await load_visible(svc, principal(request), request.path_params["subscription_id"])
    _require_enabled(sub)
    body = await read_json(request, RecoverRequest)
    now = utcnow()
    async with svc.db.write() as session:
        marked, due = await request_redelivery(
            session,
            now,
            col(Delivery.subscription_id) == sub.id,
            col(Delivery.status) == DeliveryStatus.FAILED,
            col(Delivery.event_type) != TEST_EVENT_TYPE,
            col(Delivery.created_at) >= body.since,
            col(Delivery.created_at) < (body.until or now),
        )
    return JSONResponse(
        Requeued(requeued=marked).model_dump(),
        status_code=202,
        background=BackgroundTask(_enqueue, svc, due),
    )


class ReplayRequest(RecoverRequest):
    @model_validator(mode="after")
    def _window(self) -> ReplayRequest:
        if self.until is not None and self.until < self.since:
            raise ValueError(
                f"until: {self.until.isoformat()} is before since {self.since.isoformat()}"
            )
        return self


@operation(
    Operation(
        "Send a subscription's matching stored events again (a time window of history)",
        "subscriptions",
        {202: Requeued},
        request=ReplayRequest,
        errors=(404,),
        description="Every stored event whose Clever created time is in [since, until] "
        "(until default now) and that matches the subscription now, whatever its earlier "
        "outcome, including events stored before the subscription existed; same webhook-id. "
        "The request is stored and worked through in batches; requeued counts the events.",
    )
)
async def replay(request: Request) -> Response:
    svc = services(request)
    sub = await load_visible(svc, principal(request), request.path_params["subscription_id"])
    body = await read_json(request, ReplayRequest)
    until = body.until or utcnow()
    batch = svc.settings.tuning.delivery.replay_batch
    matched = await request_replay(svc.db, sub, body.since, until, batch)
    return JSONResponse(Requeued(requeued=matched).model_dump(), status_code=202)


routes = [
    Route("/v1/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/recover", recover, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/replay", replay, methods=["POST"]),
]
