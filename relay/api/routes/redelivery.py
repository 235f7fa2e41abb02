"""Re-sending: one delivery now, or a subscription's failed deliveries over a time window."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, Field, field_validator
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.api import actions, schemas
from relay.api.auth import principal
from relay.api.context import read_json, services
from relay.api.query import to_utc
from relay.api.routes.subscriptions import load_visible
from relay.api.spec import Operation, operation
from relay.db import utcnow
from relay.delivery.bootstrap import request_bootstrap
from relay.delivery.replay import request_replay


class Requeued(BaseModel):
    requeued: int
    note: str | None = Field(
        default=None, description="why nothing was requeued, when the window itself is empty"
    )

    def response(self) -> JSONResponse:
        return JSONResponse(self.model_dump(exclude_none=True), status_code=202)


def _empty_window(since: datetime, until: datetime) -> Requeued:
    """A window whose end is not after its start: nothing to do, and said so (not an
    error: like a list filter that matches nothing)."""
    note = (
        f"the window is empty: until ({until.isoformat()}) is not after since ({since.isoformat()})"
    )
    return Requeued(requeued=0, note=note)


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
        return to_utc(parsed)


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
    delivery_id, now = await actions.retry_delivery(
        services(request), principal(request), request.path_params["delivery_id"]
    )
    accepted = RetryAccepted(id=delivery_id, status="retrying", next_attempt_at=now)
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
    sub = await actions.recoverable(svc, principal(request), request.path_params["subscription_id"])
    body = await read_json(request, RecoverRequest)
    if body.until is not None and body.until <= body.since:
        return _empty_window(body.since, body.until).response()
    marked, due = await actions.recover_failed(svc, sub, body.since, body.until)
    return JSONResponse(
        Requeued(requeued=marked).model_dump(exclude_none=True),
        status_code=202,
        background=BackgroundTask(actions.enqueue, svc, due),
    )


class ReplayRequest(RecoverRequest):
    """[since, until], both ends included (a recover window excludes until)."""


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
    if until < body.since:  # both ends are included: since == until is one instant
        return _empty_window(body.since, until).response()
    batch = svc.settings.tuning.delivery.replay_batch
    matched = await request_replay(svc.db, sub, body.since, until, batch)
    return Requeued(requeued=matched).response()


@operation(
    Operation(
        "Send a subscription the roster: one created event per record its filters match",
        "subscriptions",
        {202: Requeued},
        errors=(404,),
        description="For a consumer that starts late: every record the relay's roster "
        "holds that the subscription's filters match is sent as <type>.created with "
        "source 'snapshot' (a webhook-id of its own), then whatever happens next; an "
        "ordered subscription gets a record's snapshot before its later events. Nothing is "
        "read from Clever. The request is stored and worked through in batches; requeued "
        "counts the records.",
    )
)
async def bootstrap(request: Request) -> Response:
    svc = services(request)
    sub = await load_visible(svc, principal(request), request.path_params["subscription_id"])
    async with svc.db.write() as session:
        matched = await request_bootstrap(session, sub)
    return Requeued(requeued=matched).response()


routes = [
    Route("/v1/deliveries/{delivery_id}/retry", retry_delivery, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/recover", recover, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/replay", replay, methods=["POST"]),
    Route("/v1/subscriptions/{subscription_id}/bootstrap", bootstrap, methods=["POST"]),
]
