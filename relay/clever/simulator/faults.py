"""Fault injection: make the simulated Clever misbehave on demand or at random.

A :class:`FaultRule` fires on API requests (``/v3.1/...``) of one district or of all, and, with
a ``path`` (a prefix such as ``/v3.1/users`` or ``/v3.1/events``), only on requests whose path
starts with it. It fires for the next ``count`` matching requests (on demand; ``1`` when
neither ``count`` nor ``probability`` is given, and never used up when ``count`` is ``null``),
or with ``probability`` per request (random; ``count`` then caps how often), or both. A rule
that is never used up stays until it is removed (``DELETE /_sim/faults/{id}``): ``{"kind":
"503", "count": null, "path": "/v3.1/events"}`` holds the events endpoint back while the Data
API answers. The first rule (in the order added) that matches a request fires. Kinds:

==========  ===========================================================================
``500``     500/502/503 with a JSON ``{"message": ...}`` body (also ``502``, ``503``)
``html``    an HTML error page, with status ``status`` (default 200, or any 5xx)
``truncated`` the real 200 response, its JSON body cut in the middle
``slow``    the real response, after ``delay`` seconds
``401``     401 ``{"message": ...}`` although the token is valid
``429``     429, empty body, rate-limit headers with ``X-RateLimit-Reset`` = now + ``reset_in``
==========  ===========================================================================

``SimulatorConfig.fault_probability`` adds random faults of the kinds in :data:`RANDOM_KINDS`.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.responses import Response

FAULT_KINDS = ("500", "502", "503", "html", "truncated", "slow", "401", "429")
RANDOM_KINDS = ("500", "502", "503", "html", "truncated", "429")
JSON_TYPE = "application/json; charset=utf-8"

_MESSAGES = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    401: "Unauthorized: invalid or expired token",
}
_HTML = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class FaultRule:
    id: int
    kind: str
    count: int | None = 1  # requests left; None = unlimited
    probability: float = 1.0
    district: str | None = None  # None = every district
    path: str | None = None  # a path prefix; None = every API path
    delay: float = 2.0  # slow
    reset_in: float = 5.0  # 429
    status: int = 200  # html
    fired: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_rule(spec: Any, rule_id: int) -> FaultRule:
    """Validate a ``POST /_sim/faults`` body; raise ``ValueError`` with a readable message."""
    if not isinstance(spec, dict):
        raise ValueError("body must be a JSON object")
    kind = str(spec.get("kind", ""))
    if kind not in FAULT_KINDS:
        raise ValueError(f"'kind' must be one of {', '.join(FAULT_KINDS)}")
    probability = spec.get("probability")
    count = spec.get("count")
    if "count" not in spec and probability is None:
        count = 1
    path = spec.get("path")
    if path is not None and not (isinstance(path, str) and path.startswith("/")):
        raise ValueError("'path' must be a path prefix starting with '/', e.g. /v3.1/users")
    rule = FaultRule(id=rule_id, kind=kind, count=count, district=spec.get("district"), path=path)
    try:
        if count is not None:
            rule.count = int(count)
            if rule.count < 1:
                raise ValueError("'count' must be >= 1")
        if probability is not None:
            rule.probability = float(probability)
            if not 0.0 <= rule.probability <= 1.0:
                raise ValueError("'probability' must be between 0 and 1")
        rule.delay = float(spec.get("delay", rule.delay))
        rule.reset_in = float(spec.get("reset_in", rule.reset_in))
        rule.status = int(spec.get("status", 500 if kind != "html" else 200))
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    if rule.district is not None and not isinstance(rule.district, str):
        raise ValueError("'district' must be a district id")
    if kind == "html" and not (rule.status == 200 or 500 <= rule.status <= 599):
        raise ValueError("'status' of an html fault must be 200 or 5xx")
    if rule.delay < 0 or rule.reset_in < 0:
        raise ValueError("'delay' and 'reset_in' must be >= 0")
    return rule


class FaultInjector:
    """The active fault rules plus the configured random fault rate."""

    def __init__(self, rng: random.Random, random_probability: float = 0.0) -> None:
        self.rng = rng
        self.random_probability = random_probability
        self.rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: Any) -> FaultRule:
        rule = parse_rule(spec, self._next_id)
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def remove(self, rule_id: int) -> FaultRule | None:
        """Take one rule out (None if there is none of that id: a counted rule used up
        removes itself)."""
        for rule in self.rules:
            if rule.id == rule_id:
                self.rules.remove(rule)
                return rule
        return None

    def pick(self, district: str | None, path: str = "") -> FaultRule | None:
        """The fault for this request, if any (consumes one use of a counted rule)."""
        for rule in self.rules:
            if rule.district is not None and rule.district != district:
                continue
            if rule.path is not None and not path.startswith(rule.path):
                continue
            if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                continue
            rule.fired += 1
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
            return rule
        if self.random_probability > 0 and self.rng.random() < self.random_probability:
            kind = self.rng.choice(RANDOM_KINDS)
            status = self.rng.choice((200, 502)) if kind == "html" else 500
            return FaultRule(id=0, kind=kind, count=None, status=status, reset_in=1.0)
        return None


def fault_response(rule: FaultRule, headers: dict[str, str], rate_limit: int) -> Response:
    """The response for a fault that replaces the real answer (not slow/truncated).

    ``headers`` carries ``clever-request-id``; the 429 adds its own rate-limit headers.
    """
    if rule.kind in ("500", "502", "503", "401"):
        status = int(rule.kind)
        body = json.dumps({"message": _MESSAGES[status]})
        return Response(body, status, headers=headers, media_type=JSON_TYPE)
    if rule.kind == "html":  # a proxy's error page: no clever-request-id
        shown = rule.status if rule.status != 200 else 502
        page = _HTML.format(status=shown, reason=_MESSAGES.get(shown, "Server Error"))
        return Response(page, rule.status, media_type="text/html; charset=utf-8")
    if rule.kind == "429":
        reset = int(time.time() + rule.reset_in + 0.999)
        limit_headers = {
            **headers,
            "X-RateLimit-Limit": str(rate_limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Bucket": "bearer",
        }
        return Response(b"", 429, headers=limit_headers)
    raise ValueError(f"fault {rule.kind!r} does not replace the response")


def truncate(body: bytes) -> bytes:
    """Cut a JSON body mid-way (never empty, never complete)."""
    return body[: max(1, len(body) // 2)]
