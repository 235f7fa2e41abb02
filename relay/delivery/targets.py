"""Which addresses the relay may POST to (``docs/architecture.md``, "Targets").

Targets are internal services, so private addresses are fine. What is never fine is
link-local space, where clouds serve instance metadata and credentials (169.254.0.0/16,
fe80::/10, AWS's fd00:ec2::254): a subscription pointing there would turn the relay into a
credential-fetching proxy. Loopback (127.0.0.0/8, ::1) is refused too by default: there the
relay's own API, Redis and the database listen, and ``POST …/test`` would make any service
token a probe of them. ``relay run`` allows it (so ``relay listen`` works on a laptop);
``RELAY_ALLOWED_TARGETS`` (CIDRs and host names) replaces the default, to narrow targets for
stricter deployments or to list loopback where a deployment delivers to its own host.

The check runs twice. At registration it catches the obvious (a literal address, a well-known
metadata name, a bad scheme). At delivery it runs *inside the connector's resolver*, on the very
addresses the socket will connect to, so a name that resolved harmlessly at registration and was
later re-pointed at the metadata service (DNS rebinding) is still refused. IPv4 addresses hidden
in IPv6 (mapped, compatible, NAT64, 6to4) are unwrapped first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from relay._exceptions import TargetNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Always refused, whatever RELAY_ALLOWED_TARGETS says.
BLOCKED_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
#: Names that reach a metadata service without going through DNS (refused at registration).
BLOCKED_HOSTNAMES: frozenset[str] = frozenset(
    {"metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d, still routed by some
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")
_HOSTNAME = re.compile(r"(\*\.|\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}")
MAX_URL_LENGTH = 2048
#: Seconds a registration waits for DNS before accepting the URL with a warning.
REGISTRATION_DNS_TIMEOUT = 3.0


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), else
    itself (``::`` and ``::1`` are themselves)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _parse_ip(host: str) -> IPAddress | None:
    """``host`` as an address if it is one, including legacy IPv4 forms getaddrinfo accepts
    (``2852039166``, ``0xa9fea9fe``, ``169.254.43518``); None for a name."""
    host = host.strip("[]").rstrip(".")  # "169.254.169.254." is that address too
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Where webhooks may go. Empty ``networks`` and ``hosts`` = any non-blocked address.

    ``hosts`` entries are exact names (``hooks.internal``) or suffixes (``.internal`` or
    ``*.internal``, matching any name under it). A listed name may resolve to any address except
    a blocked one; an unlisted name must resolve only into ``networks``.
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    loopback: bool = False  # unrestricted only: whether loopback is allowed too

    @classmethod
    def from_env_value(cls, value: str | None, *, loopback: bool = False) -> TargetPolicy:
        """Parse ``RELAY_ALLOWED_TARGETS`` (``"10.0.0.0/8,hooks.internal"``); unset = any
        address but loopback (``loopback``: and loopback too)."""
        if value is None or not value.strip():
            return cls(loopback=loopback)
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for position, raw in enumerate(value.split(","), start=1):
            item = raw.strip()
            if not item:
                raise ValueError(f"RELAY_ALLOWED_TARGETS item {position} is empty")
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            name = _normalise_host(item)
            if not _HOSTNAME.fullmatch(name) or name.strip("*.").isdigit():
                raise ValueError(
                    f"RELAY_ALLOWED_TARGETS item {position} {item!r} is neither a CIDR "
                    "(10.0.0.0/8) nor a host name (hooks.internal, .internal)"
                )
            hosts.add("." + name[2:] if name.startswith("*.") else name)
        return cls(networks=tuple(networks), hosts=frozenset(hosts))

    @property
    def restricted(self) -> bool:
        """Whether RELAY_ALLOWED_TARGETS narrows targets beyond the always-blocked ranges."""
        return bool(self.networks or self.hosts)

    def host_listed(self, host: str) -> bool:
        """Whether ``host`` (a name) is allowed by name, exactly or by a ``.suffix`` entry."""
        name = _normalise_host(host)
        if name in self.hosts:
            return True
        return any(h.startswith(".") and name.endswith(h) for h in self.hosts)

    def check_address(self, host: str, address: str | IPAddress) -> None:
        """Raise TargetNotAllowed unless ``host`` may be reached at ``address``."""
        try:
            ip = (
                ipaddress.ip_address(address.split("%", 1)[0])
                if isinstance(address, str)
                else address
            )
        except ValueError:
            raise TargetNotAllowed(f"{host} resolved to a non-address {address!r}") from None
        inner = _unwrap(ip)
        for net in BLOCKED_NETWORKS:
            if ip in net or inner in net:
                what = host if _normalise_host(host).strip("[]") == str(ip) else f"{host} ({inner})"
                raise TargetNotAllowed(f"{what} is a link-local or cloud-metadata address ({net})")
        if not self.restricted:
            if inner.is_loopback and not self.loopback:
                what = host if _normalise_host(host).strip("[]") == str(ip) else f"{host} ({inner})"
                raise TargetNotAllowed(
                    f"{what} is a loopback address, refused unless RELAY_ALLOWED_TARGETS lists "
                    "it (relay run allows it)"
                )
            return
        if self.host_listed(host):
            return
        if not any(inner in net or ip in net for net in self.networks):
            raise TargetNotAllowed(f"{host} ({inner}) is outside RELAY_ALLOWED_TARGETS")

    def check_addresses(self, host: str, addresses: Iterable[str | IPAddress]) -> None:
        """Check every address: one refused address refuses the host (no partial trust)."""
        for address in addresses:
            self.check_address(host, address)

    def check_host(self, host: str) -> IPAddress | None:
        """Check what can be checked without DNS; return the address if ``host`` is literal."""
        ip = _parse_ip(host)
        if ip is not None:
            self.check_address(host, ip)
            return ip
        name = _normalise_host(host)
        if name in BLOCKED_HOSTNAMES:
            raise TargetNotAllowed(f"{host} is a cloud-metadata host name")
        return None


def validate_target_url(url: str, allowed: TargetPolicy) -> None:
    """Check a subscription URL at registration, without DNS (which could block the API).

    ValueError for a URL that is not absolute http(s); TargetNotAllowed for a literal refused
    address or a metadata host name. A name is re-checked after resolution at every delivery
    (and by :func:`check_target_url` if the caller can afford a lookup now).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"url must be an absolute http:// or https:// URL, got {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"url has no host: {url!r}")
    if port == 0:
        raise ValueError("url port must be 1-65535")
    allowed.check_host(host)
    if (
        allowed.restricted
        and _parse_ip(host) is None
        and not allowed.host_listed(host)
        and not allowed.networks
    ):
        raise TargetNotAllowed(f"{host} is not listed in RELAY_ALLOWED_TARGETS")


async def resolve_and_check(host: str, port: int, policy: TargetPolicy) -> list[str]:
    """Resolve ``host`` with the loop's getaddrinfo and check every address; return them.

    Raises TargetNotAllowed if any address is refused, OSError (socket.gaierror) if the name
    does not resolve.
    """
    literal = policy.check_host(host)
    if literal is not None:
        return [str(literal)]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    policy.check_addresses(host, addresses)
    return addresses


async def check_target_url(url: str, policy: TargetPolicy) -> list[str]:
    """:func:`validate_target_url` plus a DNS check; return warnings for the caller to show.

    A name that does not resolve (or not within ``REGISTRATION_DNS_TIMEOUT``) is accepted
    with a warning, not refused: DNS can fail for a moment, and an internal name may resolve
    only where the workers run. Delivery resolves and checks again at every attempt.
    """
    validate_target_url(url, policy)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        async with asyncio.timeout(REGISTRATION_DNS_TIMEOUT):
            await resolve_and_check(host, parts.port or 0, policy)
    except TimeoutError:
        return [
            f"url: {host} did not resolve within {REGISTRATION_DNS_TIMEOUT:g} s here; "
            "accepted, and checked again at every delivery"
        ]
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return [
            f"url: {host} does not resolve here ({reason}); accepted, since DNS can fail for "
            "a moment, and checked again at every delivery: check the host name"
        ]
    return []


class CheckingResolver(AbstractResolver):
    """An aiohttp resolver that refuses addresses the policy forbids, at connection time.

    It wraps the real resolver, so the addresses checked are exactly the ones the connector is
    about to connect to (aiohttp's DNS cache stores only results that passed). Literal IP
    hosts bypass resolvers in aiohttp, so the sender checks those itself with
    :meth:`TargetPolicy.check_host`. TargetNotAllowed propagates out of the request unchanged
    (aiohttp wraps only OSError).
    """

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.policy.check_host(host)
        if self._inner is None:
            self._inner = ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        self.policy.check_addresses(host, (r["host"] for r in results))
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
