"""The relay's exception tree, in one place (like httpx's ``_exceptions.py``).

    RelayError
    ├── ConfigError                 a setting is missing or malformed (names the variable)
    ├── CleverError                 anything that went wrong talking to Clever
    │   ├── CleverTransportError    network error or timeout: retry with backoff
    │   ├── CleverResponseError     Clever answered with a status we did not want
    │   │   ├── CleverUnauthorized  401: refresh the token or mark the district unauthorized
    │   │   ├── CleverRateLimited   429: wait until ``reset_at``
    │   │   └── CleverServerError   5xx: retry with backoff
    │   └── CleverBadBody           2xx with HTML, plain text, truncated or misshapen JSON
    ├── SecretUnreadable            a stored token or secret no configured key decrypts
    ├── LeaseLost                   another worker took over a district's poll lease
    ├── PacedOut                    the pacer holds a district's token: poll it later
    ├── TargetNotAllowed            a webhook URL resolves to a refused address
    ├── SubscriptionBusy            every in-flight slot of a subscription is taken: defer
    ├── ApiError                    an API request is refused (status, code, message)
    └── OperatorError               a CLI command failed (one line; the command exits 1)

A webhook attempt that fails is not an exception: the sender reports it as data
(``relay.delivery.sender.AttemptOutcome``), because its caller records it either way.

Every message is safe to log: no exception here carries a token or a secret.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base class of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """A setting is missing or malformed; the message names the variable."""


class CleverError(RelayError):
    """Something went wrong talking to Clever."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class CleverTransportError(CleverError):
    """The request never got an HTTP answer (connection refused, reset, timeout)."""


class CleverResponseError(CleverError):
    """Clever answered with an unexpected HTTP status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body_excerpt: str = "",
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.status_code = status_code
        self.body_excerpt = body_excerpt


class CleverUnauthorized(CleverResponseError):
    """401: the district token is invalid or was rotated."""


class CleverRateLimited(CleverResponseError):
    """429: no request may be sent with this token before ``reset_at`` (unix seconds)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        reset_at: float,
        request_id: str | None = None,
        body_excerpt: str = "",
    ) -> None:
        super().__init__(
            message, status_code=status_code, request_id=request_id, body_excerpt=body_excerpt
        )
        self.reset_at = reset_at


class CleverServerError(CleverResponseError):
    """5xx: a transient failure on Clever's side; retry with backoff."""


class CleverBadBody(CleverError):
    """A 2xx whose body is not the JSON we expect (HTML, plain text, truncated)."""

    def __init__(
        self, message: str, *, request_id: str | None = None, body_excerpt: str = ""
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.body_excerpt = body_excerpt


class CleverResponseTooLarge(CleverError):
    """Clever's answer was larger than the cap derived from the page size asked for; the
    poller asks for smaller pages (``limit``: the cap is per request)."""

    def __init__(self, message: str, *, limit: int, request_id: str | None = None) -> None:
        super().__init__(message, request_id=request_id)
        self.limit = limit


class SecretUnreadable(RelayError):
    """A stored district token or signing secret that none of the process's keys
    (``RELAY_ENCRYPTION_KEY``) decrypts: written by a process with a key this one lacks, or
    under a key dropped before ``relay keys reencrypt`` ran. It is that row's problem only:
    the subscription is disabled, the district put in ``error``, and the API still reads,
    changes and deletes the row (``relay.db.crypto``). The message never carries the value."""


class LeaseLost(RelayError):
    """This worker no longer holds the district's poll lease (it expired and another worker
    took it, or the cursor moved): the page it fetched must not be stored."""


class TargetNotAllowed(RelayError):
    """A webhook URL is, or resolves to, an address the relay refuses to call."""


class SubscriptionBusy(RelayError):
    """The subscription's in-flight slots stayed taken (in this worker or across workers),
    its per-second budget is spent, or its owner holds its share of the worker: the deliver
    job steps aside and goes back in the queue ``defer`` seconds later."""

    def __init__(self, defer: float) -> None:
        super().__init__(f"subscription busy: retrying in {defer:.1f}s")
        self.defer = defer


class SubscriptionClosed(RelayError):
    """The subscription was deleted or disabled through the API after the job loaded it: its
    gate turns the attempt away (``relay.queue.gates``)."""


class PacedOut(RelayError):
    """The pacer holds this district's token (after a 429, or spreading a low rate-limit
    window): the poller waits ``wait`` seconds, releasing its lease if that is long."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"paced for {wait:.1f}s")
        self.wait = wait


API_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(RelayError):
    """An API request is refused: answered ``status`` with the error shape
    ``{"error": {"code", "message"}}`` (``relay.api.errors``)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or API_ERROR_CODES.get(status, "error")
        self.message = message
        self.headers = headers or {}


class OperatorError(RelayError):
    """A CLI command failed; the message is printed in one line and the command exits 1."""
