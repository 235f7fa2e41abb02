"""Discover district tokens with the app's client credentials (``GET /oauth/tokens``).

Tokens rotate: after a 401 on events the poll job fetches the district's token again before
marking the district unauthorized. This lives on clever.com, not api.clever.com, is called with
HTTP Basic, and sends no rate-limit or request-id headers. Whether the list is paginated is
unconfirmed, so a ``next`` link is followed, but only on the same origin: the client
credentials must never be sent to another host.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from relay._exceptions import CleverBadBody
from relay.clever.client import USER_AGENT, error_from_response, transport_error
from relay.clever.events import bad_json, safe_excerpt

__all__ = ["MAX_PAGES", "DistrictToken", "fetch_district_tokens"]

logger = logging.getLogger("relay.clever")

MAX_PAGES = 100  # a guard against a `next` link that loops


@dataclass(frozen=True)
class DistrictToken:
    """A district's bearer token for the Events API; its repr never shows the token."""

    district_id: str
    access_token: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    created: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"DistrictToken(district_id={self.district_id!r}, scopes={self.scopes!r}, "
            f"created={self.created!r}, access_token='***')"
        )


async def fetch_district_tokens(
    oauth_url: str,
    client_id: str,
    client_secret: str,
    *,
    district: str | None = None,
    http: httpx.AsyncClient | None = None,
    request_timeout: float = 30.0,
) -> list[DistrictToken]:
    """Every district token of the app, or only ``district``'s; follows ``next`` links.

    ``request_timeout`` bounds each HTTP request (httpx semantics), not the whole discovery.
    """
    base = oauth_url.rstrip("/")
    params: dict[str, str] = {"owner_type": "district"}
    if district is not None:
        params["district"] = district
    url: str | None = str(httpx.URL(base + "/oauth/tokens", params=params))
    auth = httpx.BasicAuth(client_id, client_secret)
    redact = (client_secret,)
    client = http if http is not None else httpx.AsyncClient(follow_redirects=False)
    tokens: list[DistrictToken] = []
    seen: set[str] = set()
    try:
        while url is not None and url not in seen and len(seen) < MAX_PAGES:
            seen.add(url)
            document = await _get_page(client, url, auth, request_timeout, redact)
            tokens.extend(_parse_tokens(document))
            url = _next_url(document, url, base)
    finally:
        if http is None:
            await client.aclose()
    if district is not None:
        # Don't trust the filter blindly: the caller asked for one district's token.
        tokens = [token for token in tokens if token.district_id == district]
    return list(dict.fromkeys(tokens))


async def _get_page(
    client: httpx.AsyncClient,
    url: str,
    auth: httpx.BasicAuth,
    request_timeout: float,
    redact: tuple[str, ...],
) -> Any:
    path = urlsplit(url).path
    what = f"GET {path}"
    started = time.perf_counter()
    try:
        response = await client.get(
            url,
            auth=auth,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            timeout=request_timeout,
        )
    except httpx.HTTPError as exc:
        failure = transport_error(exc, what, redact=redact)
        logger.warning("%s", failure, extra={"method": "GET", "path": path})
        raise failure from None
    fields: dict[str, object] = {
        "method": "GET",
        "path": path,
        "status_code": response.status_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    logger.debug("%s -> %s", what, response.status_code, extra=fields)
    if not response.is_success:
        error = error_from_response(
            response, what=what, credentials="the client credentials", redact=redact
        )
        logger.warning("%s", error, extra=fields)
        raise error
    try:
        return json.loads(response.content)
    except ValueError as exc:
        if b"access_token" in response.content:
            # A cut token list: even a short excerpt could carry a live token.
            raise CleverBadBody(f"{what}: Clever sent truncated or invalid JSON") from None
        raise bad_json(response.content, exc, redact=redact, what=f"{what}: Clever sent") from None


def _parse_tokens(document: Any) -> list[DistrictToken]:
    """Strict about what we need; messages name fields, never values (they are tokens)."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise CleverBadBody("token list is not an object with a 'data' list")
    tokens: list[DistrictToken] = []
    for index, item in enumerate(document["data"]):
        where = f"token list item {index}"
        if not isinstance(item, dict):
            raise CleverBadBody(f"{where} is not an object")
        owner = item.get("owner")
        if not isinstance(owner, dict) or not isinstance(owner.get("id"), str):
            raise CleverBadBody(f"{where} has no 'owner.id'")
        if owner.get("type", "district") != "district":
            continue
        access_token = item.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise CleverBadBody(f"{where} has no 'access_token'")
        scopes = item.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise CleverBadBody(f"{where} has malformed 'scopes'")
        tokens.append(
            DistrictToken(
                district_id=owner["id"],
                access_token=access_token,
                scopes=tuple(scopes),
                created=_parse_time(item.get("created")),
            )
        )
    return tokens


def _next_url(document: Mapping[str, Any], current: str, base: str) -> str | None:
    links = document.get("links")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "next":
            uri = link.get("uri")
            if not isinstance(uri, str) or not uri:
                return None
            target = urljoin(current, uri)
            if _origin(target) != _origin(base):
                raise CleverBadBody(
                    "token list 'next' link leaves "
                    f"{safe_excerpt(urlsplit(base).netloc, limit=80)}; not following it"
                )
            return target
    return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
