"""``relay subscriptions …``, ``relay tokens …`` and ``relay deliveries recover`` driven against
a real API server and a real receiver, as an operator would (issue 14, item 8)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from relay.api.app import create_app
from relay.cli import main
from relay.db import Database
from relay.db.models import Delivery
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.log_rows import add_delivery
from tests.support.receiver import Receiver
from tests.support.servers import ServerThread, serve


@pytest.fixture
def api_url(settings: Settings, runtime: RuntimeSecrets) -> Iterator[str]:
    with serve(create_app(settings, runtime)) as server:
        yield server.url


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, ServerThread]]:
    hooks = Receiver()
    with serve(hooks.app()) as server:
        yield hooks, server


def cli(capsys: pytest.CaptureFixture[str], api: str, *argv: str, token: str = ADMIN_TOKEN):  # type: ignore[no-untyped-def]
    code = main([*argv, "--api", api, "--token", token])
    out, err = capsys.readouterr()
    return code, out, err


def value(out: str, name: str) -> str:
    """The value of a ``name:  value`` line."""
    for line in out.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name!r} line in:\n{out}")


def test_create_show_patch_list_rotate_delete(
    api_url: str, receiver: tuple[Receiver, ServerThread], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{receiver[1].url}/hooks"
    code, out, err = cli(
        capsys, api_url, "subscriptions", "create", "--url", url,
        "--record-types", "users,sections", "--schools", "s1", "--ordered",
        "--description", "gradebook sync",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    sub = value(out, "subscription")
    secret = value(out, "secret").split()[0]
    assert secret.startswith("whsec_")
    assert value(out, "filters") == "record_types=sections,users schools=s1"
    assert value(out, "ordered") == "yes"

    code, out, _ = cli(capsys, api_url, "subscriptions", "show", sub)
    assert (code, value(out, "url"), value(out, "state")) == (0, url, "enabled")
    assert secret not in out

    code, out, _ = cli(
        capsys, api_url, "subscriptions", "patch", sub, "--schools", "", "--no-enabled",
        "--no-ordered",
    )  # fmt: skip
    assert code == 0
    assert value(out, "filters") == "record_types=sections,users"
    assert (value(out, "state"), value(out, "ordered")) == ("DISABLED (by hand)", "no")

    code, out, err = cli(capsys, api_url, "subscriptions", "patch", sub)
    assert (code, err) == (2, "relay: nothing to change: give at least one option (see --help)\n")

    code, out, _ = cli(capsys, api_url, "subscriptions", "list")
    header, row = out.splitlines()
    assert header.split() == ["ID", "OWNER", "STATE", "ORDERED", "URL", "FILTERS"]
    assert row.split()[:4] == [sub, "admin", "DISABLED", "-"]

    code, out, _ = cli(capsys, api_url, "subscriptions", "rotate-secret", sub)
    rotated = out.splitlines()[0]
    assert code == 0
    assert rotated.startswith("whsec_")
    assert rotated != secret
    assert "old one keeps signing for 24 h" in out

    code, out, _ = cli(capsys, api_url, "subscriptions", "delete", sub)
    assert (code, out) == (
        0,
        f"subscription {sub} deleted (its deliveries still waiting are cancelled)\n",
    )
    code, _, err = cli(capsys, api_url, "subscriptions", "show", sub)
    assert (code, err) == (1, f"relay: 404: no subscription {sub!r}\n")


def test_create_warns_about_a_host_that_does_not_resolve(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        capsys, api_url, "subscriptions", "create", "--url", "http://no-such-host.invalid/x"
    )
    assert code == 0
    assert err.startswith("warning: url: no-such-host.invalid does not resolve here")
    code, _, err = cli(capsys, api_url, "subscriptions", "create", "--url", "htp://x")
    assert (code, err) == (
        1,
        "relay: 422: url: must be an absolute http:// or https:// URL, got 'htp://x'\n",
    )


def test_test_send_is_in_the_delivery_log(
    api_url: str, receiver: tuple[Receiver, ServerThread], capsys: pytest.CaptureFixture[str]
) -> None:
    hooks, server = receiver
    _, out, _ = cli(capsys, api_url, "subscriptions", "create", "--url", f"{server.url}/h")
    sub, secret = value(out, "subscription"), value(out, "secret").split()[0]

    code, out, err = cli(capsys, api_url, "subscriptions", "test", sub)
    assert (code, err) == (0, "")
    assert out.startswith("relay.test accepted: 204 in ")
    delivery = out.rsplit("relay deliveries show ", 1)[1].rstrip(")\n")
    [body] = hooks.verified(secret)
    assert body["type"] == "relay.test"

    code, out, _ = cli(capsys, api_url, "deliveries", "show", delivery)
    assert code == 0
    assert value(out, "status") == "succeeded"
    assert value(out, "event").endswith("(relay.test)")
    assert value(out, "attempts") == "1 (1 not from the schedule)"
    header, row = out.split("\n\n")[1].splitlines()
    assert header.split()[3] == "BY"
    assert row.split()[3:5] == ["test", "204"]
    code, out, _ = cli(capsys, api_url, "deliveries", "list", "--event-type", "relay.test")
    assert out.splitlines()[1].split()[:2] == [delivery, "succeeded"]

    code, _, err = cli(capsys, api_url, "deliveries", "retry", delivery)
    assert code == 1
    assert "409: a relay.test delivery is not sent again; send a new test" in err

    hooks.responder = lambda n: (500, {}, 0.0)
    code, out, _ = cli(capsys, api_url, "subscriptions", "test", sub)
    assert code == 1
    assert out.startswith("relay.test FAILED: 500 in ")
    code, out, _ = cli(capsys, api_url, "deliveries", "list", "--status", "failed", "--json")
    [failed] = json.loads(out)
    assert (failed["event_type"], failed["attempts"], failed["next_attempt_at"]) == (
        "relay.test",
        1,
        None,
    )


async def test_recover_marks_manual_attempts(
    db: Database, api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = cli(capsys, api_url, "subscriptions", "create", "--url", "http://127.0.0.1:9/x")
    sub = value(out, "subscription")
    failed = await add_delivery(db, sub, status="failed", attempts=8, last_status_code=500)
    code, out, err = cli(
        capsys, api_url, "deliveries", "recover", "--subscription", sub,
        "--since", "2024-01-01T00:00:00Z",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith(f"subscription {sub}: 1 failed deliveries get a manual attempt now")
    async with db.read() as session:
        row = await session.get(Delivery, failed)
    assert row is not None
    assert (row.status, row.manual_retry) == ("retrying", True)
    code, _, err = cli(
        capsys, api_url, "deliveries", "recover", "--subscription", sub, "--since", "yesterday"
    )
    assert code == 1
    assert "422: since: not an ISO 8601 timestamp with an offset" in err


def test_tokens_create_and_revoke(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, api_url, "tokens", "create", "gradebook")
    token = out.strip()
    assert code == 0
    assert token.startswith("rst_")
    assert "earlier tokens of the owner stay valid until `relay tokens revoke gradebook`" in err
    code, out, _ = cli(capsys, api_url, "subscriptions", "list", token=token)
    assert (code, out.startswith("no subscriptions")) == (0, True)
    code, out, _ = cli(
        capsys, api_url, "subscriptions", "create", "--url", "http://127.0.0.1:9/x", token=token
    )
    assert value(out, "owner") == "gradebook"

    code, out, _ = cli(capsys, api_url, "tokens", "revoke", "gradebook")
    assert code == 0
    assert out.startswith("every token of 'gradebook' is revoked")
    code, _, err = cli(capsys, api_url, "subscriptions", "list", token=token)
    assert (code, "401 invalid or revoked token" in err) == (1, True)
    code, _, err = cli(capsys, api_url, "tokens", "revoke", "gradebook")
    assert (code, err) == (1, "relay: 404: no active tokens for owner 'gradebook'\n")
    code, _, err = cli(capsys, api_url, "tokens", "create", "grade book")
    assert code == 1
    assert "422: owner: must be 1-100 letters" in err
