"""Target policy: link-local/metadata refused at registration and after resolution."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from relay._exceptions import TargetNotAllowed
from relay.delivery.targets import (
    CheckingResolver,
    TargetPolicy,
    check_target_url,
    resolve_and_check,
    validate_target_url,
)

ANY = TargetPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.internal/clever",
        "https://example.com:8443/x?y=1",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://[fd00::1]/",  # private IPv6 is fine, only fd00:ec2::254 is metadata
        "HTTP://Example.COM/",
    ],
)
def test_private_and_public_targets_are_allowed(url: str) -> None:
    validate_target_url(url, ANY)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/",
        "http://127.1.2.3/",
        "http://[::1]:9000/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_loopback_is_refused_by_default_and_allowed_when_asked(url: str) -> None:
    """Loopback is where the relay's own API and Redis listen: refused unless ``relay run``
    (``loopback=True``) or RELAY_ALLOWED_TARGETS lists it."""
    with pytest.raises(TargetNotAllowed, match="loopback address, refused unless"):
        validate_target_url(url, ANY)
    validate_target_url(url, TargetPolicy(loopback=True))
    validate_target_url(url, TargetPolicy.from_env_value("127.0.0.0/8,::1/128,::ffff:0:0/96"))
    with pytest.raises(TargetNotAllowed, match="outside RELAY_ALLOWED_TARGETS"):
        validate_target_url(url, TargetPolicy.from_env_value("10.0.0.0/8"))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1:8080/",
        "http://[fe80::1]/",
        "http://[fe80::1%25eth0]/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./",
        "http://169.254.169.254./",  # a trailing dot is the same address
        "http://[::169.254.169.254]/",  # IPv4-compatible IPv6
    ],
)
def test_link_local_and_metadata_refused_at_registration(url: str) -> None:
    with pytest.raises(TargetNotAllowed, match="metadata"):
        validate_target_url(url, ANY)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/", "absolute http"),
        ("/relative/path", "absolute http"),
        ("example.com/hook", "absolute http"),
        ("javascript:alert(1)", "absolute http"),
        ("http:///nohost", "no host"),
        ("http://example.com:99999/", "malformed"),
        ("http://example.com:0/", "1-65535"),
        ("http://exa mple.com/", "whitespace"),
        ("", "non-empty"),
        ("http://e.com/" + "a" * 3000, "longer"),
    ],
)
def test_malformed_urls_are_value_errors(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_target_url(url, ANY)


def test_policy_from_env_value() -> None:
    assert TargetPolicy.from_env_value(None) == ANY
    assert TargetPolicy.from_env_value("  ") == ANY
    policy = TargetPolicy.from_env_value(
        "10.0.0.0/8, hooks.internal,*.svc.cluster.local, fd12::/16"
    )
    assert [str(n) for n in policy.networks] == ["10.0.0.0/8", "fd12::/16"]
    assert policy.hosts == {"hooks.internal", ".svc.cluster.local"}
    assert policy.restricted
    assert policy.host_listed("HOOKS.internal.")
    assert policy.host_listed("a.b.svc.cluster.local")
    assert not policy.host_listed("svc.cluster.local.evil.com")
    with pytest.raises(ValueError, match="item 2 is empty"):
        TargetPolicy.from_env_value("10.0.0.0/8,,x")
    with pytest.raises(ValueError, match=r"item 1 'not a host!' is neither a CIDR"):
        TargetPolicy.from_env_value("not a host!")
    with pytest.raises(ValueError, match=r"item 2 '10\.0\.0\.0/33'"):
        TargetPolicy.from_env_value("hooks.internal,10.0.0.0/33")


def test_restricted_policy_narrows_targets() -> None:
    policy = TargetPolicy.from_env_value("10.0.0.0/8,hooks.internal")
    validate_target_url("http://10.1.2.3/", policy)
    validate_target_url("http://hooks.internal/x", policy)
    validate_target_url("http://other.internal/x", policy)  # a name: decided after resolution
    with pytest.raises(TargetNotAllowed, match="outside RELAY_ALLOWED_TARGETS"):
        validate_target_url("http://192.168.1.1/", policy)
    names_only = TargetPolicy.from_env_value("hooks.internal")
    with pytest.raises(TargetNotAllowed, match="not listed"):
        validate_target_url("http://other.internal/x", names_only)
    # The blocked ranges win even over an explicit allowance.
    with pytest.raises(TargetNotAllowed, match="metadata"):
        validate_target_url("http://169.254.169.254/", TargetPolicy.from_env_value("0.0.0.0/0"))


def _fake_getaddrinfo(table: dict[str, list[str]]) -> Any:
    async def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[Any] = []
        for addr in table[host]:
            if ":" in addr:
                out.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, int(port or 0), 0, 0))
                )
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port or 0))))
        return out

    return getaddrinfo


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", _fake_getaddrinfo(table))
    return table


async def test_resolve_and_check(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["hooks.internal"] = ["10.0.0.7", "fd00::7"]
    fake_dns["rebound.example"] = ["10.0.0.8", "169.254.169.254"]
    fake_dns["v6meta.example"] = ["fd00:ec2::254"]
    fake_dns["mapped.example"] = ["::ffff:169.254.169.254"]
    assert await resolve_and_check("hooks.internal", 443, ANY) == ["10.0.0.7", "fd00::7"]
    assert await resolve_and_check("10.0.0.9", 80, ANY) == ["10.0.0.9"]
    for host in ("rebound.example", "v6meta.example", "mapped.example", "169.254.169.254"):
        with pytest.raises(TargetNotAllowed):
            await resolve_and_check(host, 80, ANY)
    with pytest.raises(socket.gaierror):
        await resolve_and_check("nowhere.example", 80, ANY)
    narrow = TargetPolicy.from_env_value("10.0.0.0/8")
    assert await resolve_and_check(
        "hooks.internal", 80, TargetPolicy.from_env_value("10.0.0.0/8,fd00::/8")
    )
    with pytest.raises(TargetNotAllowed, match=r"fd00::7\) is outside"):
        await resolve_and_check("hooks.internal", 80, narrow)


async def test_check_target_url_resolves_when_it_can(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["evil.example"] = ["169.254.169.254"]
    fake_dns["ok.example"] = ["10.1.1.1"]
    await check_target_url("http://ok.example/", ANY)
    await check_target_url("http://unresolvable.example/", ANY)  # decided at delivery
    with pytest.raises(TargetNotAllowed, match=r"evil\.example"):
        await check_target_url("http://evil.example/", ANY)


async def test_checking_resolver_refuses_at_connection_time(fake_dns: dict[str, list[str]]) -> None:
    resolver = CheckingResolver(ANY)
    fake_dns["hooks.internal"] = ["10.0.0.7"]
    results = await resolver.resolve("hooks.internal", 80)
    assert [r["host"] for r in results] == ["10.0.0.7"]
    fake_dns["hooks.internal"] = ["169.254.169.254"]  # DNS rebinding after registration
    with pytest.raises(TargetNotAllowed):
        await resolver.resolve("hooks.internal", 80)
    await resolver.close()
