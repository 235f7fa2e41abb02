"""Request and response bodies. Requests forbid unknown fields so a typo is an error, not a
silently ignored setting."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
)

from relay._exceptions import TargetNotAllowed
from relay.clever.client import TOKEN_PATTERN, is_valid_token
from relay.delivery.signing import SECRET_PATTERN, parse_secret
from relay.delivery.targets import TargetPolicy, validate_target_url
from relay.fanout import operational
from relay.fanout.matching import ACTIONS, FIELD_PATH, RECORD_TYPES, ROLES, parse_path
from relay.validation import described_pattern

_ID_CHARACTERS = "letters, digits and _ . : - only (no spaces)"
Identifier = Annotated[
    str, described_pattern(r"^[A-Za-z0-9_.:-]{1,64}$", f"must be 1-64 {_ID_CHARACTERS}")
]
OwnerName = Annotated[
    str, described_pattern(r"^[A-Za-z0-9_.:-]{1,100}$", f"must be 1-100 {_ID_CHARACTERS}")
]


ANY_TARGET = TargetPolicy(loopback=True)  # the form only; the route checks the policy


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def check_url(value: object) -> object:
    """Syntax only (422), before the pattern so that a typo in the scheme is named as such;
    the route checks the target policy (403), which may resolve the name."""
    if not isinstance(value, str):
        return value  # the type check names it
    try:
        validate_target_url(value.strip(), ANY_TARGET)
    except TargetNotAllowed:
        pass  # well formed: the route's policy check answers for it
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix("url ")) from None
    return value


RecordType = Literal[
    "users", "sections", "schools", "courses", "terms", "districts", "resources", "relay"
]
Action = Literal["created", "updated", "deleted"]
Role = Literal["student", "teacher", "staff", "district_admin", "contact"]
PATH = f"^{FIELD_PATH.pattern}$"  # the matching rule's, anchored for the OpenAPI spec
FieldPath = Annotated[
    str,
    described_pattern(
        PATH, "must be a dotted field path such as roles.student.school", max_length=200
    ),
]


def _check_members(values: object, allowed: tuple[str, ...], what: str) -> object:
    """Runs before type validation, to name the bad value in words a person reads."""
    if isinstance(values, list):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            expected = ", ".join(allowed)
            raise ValueError(f"unknown {what} {unknown[0]!r}; expected one of {expected}")
        return sorted(set(values))
    return values


def _check_secret(value: str | None) -> str | None:
    if value is not None:
        parse_secret(value, strict=True)
    return value


class SubscriptionFilters(RequestBody):
    record_types: list[RecordType] | None = Field(
        default=None,
        description="Clever record types; 'relay' adds the relay's operational events "
        "(relay.subscription.disabled, relay.delivery.failed, relay.district.*), which "
        "nobody receives without listing it",
    )
    actions: list[Action] | None = None
    schools: list[Identifier] | None = Field(default=None, max_length=1000)
    districts: list[Identifier] | None = Field(default=None, max_length=1000)
    roles: list[Role] | None = Field(
        default=None, description="users.* events of users holding one of these roles"
    )
    changed: list[FieldPath] | None = Field(
        default=None,
        max_length=100,
        description="*.updated events whose previous_attributes hold one of these dotted "
        "paths (e.g. roles.student.school, name, teachers) or something below it",
    )

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, v: object) -> object:
        return _check_members(v, ROLES, "role")

    @field_validator("changed", mode="before")
    @classmethod
    def _changed(cls, v: object) -> object:
        if isinstance(v, list):
            for path in v:
                if not isinstance(path, str):
                    raise ValueError(f"expected a dotted field path string, got {path!r}")
                parse_path(path)
            return sorted(set(v))
        return v

    @field_validator("record_types", mode="before")
    @classmethod
    def _record_types(cls, v: object) -> object:
        return _check_members(v, (*RECORD_TYPES, operational.RECORD_TYPE), "record type")

    @field_validator("actions", mode="before")
    @classmethod
    def _actions(cls, v: object) -> object:
        return _check_members(v, ACTIONS, "action")

    @field_validator("schools", "districts")
    @classmethod
    def _dedupe(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else sorted(set(v))


_LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = f"{_LABEL}(?:\\.{_LABEL})*\\.?"
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    "\\[(?:"
    + "|".join(
        (
            f"(?:{_H}:){{7}}{_H}",
            f"(?:{_H}:){{1,7}}:",
            *(f"(?:{_H}:){{1,{6 - n}}}(?::{_H}){{1,{n + 1}}}" for n in range(6)),
            f":(?::{_H}){{1,7}}",
            "::",
        )
    )
    + ")\\]"
)
_PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"

WebhookUrl = Annotated[
    str,
    described_pattern(
        # an ASCII host name (IDN hosts in punycode) or an IP literal, an optional port 1-65535,
        # then any visible characters: what validate_target_url accepts, so that the schema
        # promises no URL the API refuses
        f"^https?://(?:{_HOST_NAME}|{_IPV6})(?::{_PORT})?(?:/[^\\s\\x00-\\x1f\\x7f-\\x9f]*)?$",
        "must be an absolute http:// or https:// URL with an ASCII host name (punycode for "
        "international names), e.g. https://hooks.internal/clever",
        min_length=8,
        max_length=2048,
    ),
]


def _integral(value: object) -> object:
    """JSON has one number type: 8.0 is the integer 8 (as JSON Schema's "integer" says);
    8.5, "8" and true are still refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


MaxInFlight = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=1000,
        description="attempts in flight to this subscription at once, across all workers "
        "(default 8): its rate is at most max_in_flight / the receiver's response time",
    ),
    BeforeValidator(_integral),  # after Field: before it, the schema loses ge/le
]
MaxPerSecond = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=10000,
        description="attempts started per second, across all workers (null: no throttle)",
    ),
    BeforeValidator(_integral),  # after Field: before it, the schema loses ge/le
]


class SubscriptionCreate(SubscriptionFilters):
    url: WebhookUrl = Field(description="absolute http(s) URL the relay POSTs to")
    description: str | None = Field(default=None, max_length=1000)
    secret: str | None = Field(
        default=None,
        description="whsec_ + base64 of 24-64 bytes; generated when absent",
        json_schema_extra={"pattern": SECRET_PATTERN},
    )
    enabled: StrictBool = True
    ordered: StrictBool = Field(
        default=False,
        description="deliver each record's events one at a time, in Clever's order",
    )
    max_in_flight: MaxInFlight = 8
    max_per_second: MaxPerSecond | None = None
    owner: OwnerName | None = Field(
        default=None, description="admin only; a service token always creates its own"
    )
    bootstrap: StrictBool = Field(
        default=False,
        description="send the new subscription the roster first: one created event per "
        "record its filters match (source 'snapshot'), as POST .../bootstrap does",
    )

    _url = field_validator("url", mode="before")(check_url)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return _check_secret(v)


class SubscriptionUpdate(SubscriptionFilters):
    url: WebhookUrl | None = None
    description: str | None = Field(default=None, max_length=1000)
    enabled: StrictBool | None = None
    ordered: StrictBool | None = None
    max_in_flight: MaxInFlight | None = None
    max_per_second: MaxPerSecond | None = Field(default=None, description="null: no throttle")
    secret: str | None = Field(
        default=None,
        description="a new signing secret, used at once (the old one stops signing; "
        "rotate-secret keeps it for 24 h): whsec_ + base64 of 24-64 bytes; never shown",
        json_schema_extra={"pattern": SECRET_PATTERN},
    )

    _url = field_validator("url", mode="before")(check_url)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return _check_secret(v)


class Subscription(BaseModel):
    id: str
    owner: str
    url: str
    description: str | None
    record_types: list[str]
    actions: list[str]
    schools: list[str]
    districts: list[str]
    roles: list[str]
    changed: list[str]
    enabled: bool
    ordered: bool
    max_in_flight: int
    max_per_second: int | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class SubscriptionWithSecret(Subscription):
    secret: str = Field(description="shown only at creation and rotation")


WARNINGS = (
    "what the relay accepted but you should check, e.g. a URL whose host does not resolve "
    "now; empty when all is well"
)


class BootstrapRequested(BaseModel):
    requeued: int = Field(description="the roster records the bootstrap will send")


class SubscriptionCreated(SubscriptionWithSecret):
    warnings: list[str] = Field(default_factory=list, description=WARNINGS)
    bootstrap: BootstrapRequested | None = Field(
        default=None, description="with bootstrap: true, what it will send"
    )


class SubscriptionChanged(Subscription):
    warnings: list[str] = Field(default_factory=list, description=WARNINGS)


class SubscriptionStats(BaseModel):
    subscription_id: str
    window: Literal["1h", "24h", "7d"]
    since: datetime = Field(description="the window's start (counts begin at its hour)")
    attempts: int = Field(description="attempts made in the window, manual ones included")
    succeeded: int = Field(description="attempts that got a 2xx in time")
    failed: int = Field(description="attempts that did not")
    success_rate: float | None = Field(description="succeeded / attempts; null without any")
    p50_ms: float | None = Field(description="median attempt duration (estimated)")
    p95_ms: float | None = Field(description="95th percentile attempt duration (estimated)")
    pending: int = Field(description="deliveries still waiting for an attempt, now")
    deliveries_failed: int = Field(description="deliveries that ended failed in the window")
    last_success_at: datetime | None
    last_failure_at: datetime | None


class TestAttempt(BaseModel):
    webhook_id: str = Field(description="the webhook-id of the relay.test event sent")
    delivery_id: int = Field(description="the test's delivery in the delivery log")
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str


def _check_token(value: object) -> object:
    """Clever's tokens are printable ASCII; one with a space or another character an HTTP
    header cannot carry would only fail later, at every poll."""
    if isinstance(value, str) and value and not is_valid_token(value):
        raise ValueError(
            "must be the district token as Clever issued it: printable ASCII, no spaces"
        )
    return value


class DistrictCreate(RequestBody):
    id: Identifier
    token: str = Field(
        min_length=1,
        max_length=512,
        description="Clever district token",
        json_schema_extra={"pattern": TOKEN_PATTERN},
    )
    name: str | None = Field(default=None, max_length=200)
    start_from: Literal["latest", "earliest", "sync"] = Field(
        default="latest",
        description="latest: changes from now on; earliest: every event Clever still keeps; "
        "sync: a full read of Clever's Data API first (every record arrives as created), "
        "then changes from the moment it began",
    )

    _token = field_validator("token", mode="before")(_check_token)


class DistrictResync(RequestBody):
    emit_created: bool = Field(
        default=True,
        description="false: records the roster does not hold yet join it without a created "
        "event (a district registered before the roster existed, whose subscribers already "
        "hold its records); updates and deletes are still sent",
    )


class DistrictUpdate(RequestBody):
    name: str | None = Field(default=None, max_length=200)
    token: str | None = Field(
        default=None, min_length=1, max_length=512, json_schema_extra={"pattern": TOKEN_PATTERN}
    )

    _token = field_validator("token", mode="before")(_check_token)
    status: Literal["active", "paused"] | None = Field(
        default=None,
        description="'paused' stops polling; 'active' resumes and acknowledges "
        "gap_detected, unauthorized or error",
    )


class DistrictSync(BaseModel):
    id: int
    state: Literal["running", "succeeded", "failed"]
    reason: Literal["initial", "gap", "requested", "scheduled"]
    started_at: datetime
    finished_at: datetime | None
    records_read: int = Field(description="records read from Clever's Data API so far")
    created: int
    updated: int
    deleted: int
    error: str | None


class District(BaseModel):
    id: str
    name: str | None
    status: Literal["active", "paused", "syncing", "unauthorized", "gap_detected", "error"]
    start_from: str
    token_source: str
    cursor: str | None = Field(description="the last stored Clever event id")
    last_polled_at: datetime | None
    last_event_at: datetime | None
    lag_seconds: float | None
    last_error: str | None
    sync: DistrictSync | None = Field(
        default=None, description="the district's last or running sync of the roster"
    )
    created_at: datetime
    updated_at: datetime


class TokenCreate(RequestBody):
    owner: OwnerName = Field(json_schema_extra={"not": {"const": "admin"}})


class Token(BaseModel):
    owner: str
    token: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class SubscriptionList(BaseModel):
    data: list[Subscription]
    next_cursor: str | None


class DistrictList(BaseModel):
    data: list[District]
    next_cursor: str | None
