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
    ├── LeaseLost                   another worker took over a district's poll lease
    ├── TargetNotAllowed            a webhook URL resolves to a refused address
    ├── SubscriptionBusy            every in-flight slot of a subscription is taken: defer
    └── DeliveryError               a webhook attempt failed (not 2xx, timeout, refused...)

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


class LeaseLost(RelayError):
    """This worker no longer holds the district's poll lease (it expired and another worker
    took it, or the cursor moved): the page it fetched must not be stored."""


class TargetNotAllowed(RelayError):
    """A webhook URL is, or resolves to, an address the relay refuses to call."""


class SubscriptionBusy(RelayError):
    """Every in-flight slot of the subscription in this worker stayed taken: the deliver job
    steps aside and goes back in the queue ``defer`` seconds later."""

    def __init__(self, defer: float) -> None:
        super().__init__(f"subscription busy: retrying in {defer:.1f}s")
        self.defer = defer


class DeliveryError(RelayError):
    """A webhook attempt did not succeed."""
