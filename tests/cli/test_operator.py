from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from relay.api.app import create_app
from relay.cli import main
from relay.db import Database
from relay.db.models import Delivery, DeliveryAttempt
from relay.secrets import RuntimeSecrets
from relay.settings import Settings, get_settings
from tests.support.config import ADMIN_TOKEN
from tests.support.log_rows import T0, add_delivery
from tests.support.log_rows import add_owned_subscription as add_subscription
from tests.support.servers import free_port, serve


@pytest.fixture
def api_url(settings: Settings, runtime: RuntimeSecrets) -> Iterator[str]:
    with serve(create_app(settings, runtime)) as server:
        yield server.url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def columns(header: str) -> list[int]:
    """Start offset of each header word (headers are single words or 'WORD (UTC)')."""
    return [m.start() for m in re.finditer(r"\S+(?: \(\S+\))?", header)]


async def test_deliveries_list_table(
    db: Database, api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await add_subscription(db, "admin")
    other = await add_subscription(db, "admin")
    ok = await add_delivery(db, sub, created_at=T0)
    failed = await add_delivery(
        db, sub, status="failed", attempts=8, last_status_code=500, created_at=T0
    )
    await add_delivery(db, other, status="failed", created_at=T0)
    retrying = await add_delivery(
        db, sub, status="retrying", last_status_code=None, next_attempt_at=T0 + timedelta(1)
    )
    auth = ("--api", api_url, "--token", ADMIN_TOKEN)

    code, out, err = run(capsys, "deliveries", "list", *auth, "--subscription", sub)
    assert (code, err) == (0, "")
    header, *lines = out.splitlines()
    assert header.split()[:7] == ["ID", "STATUS", "SUBSCRIPTION", "EVENT", "TYPE", "TRIES", "CODE"]
    assert [int(line.split()[0]) for line in lines] == [retrying, failed, ok]
    starts = columns(header)
    status_col, created_col = starts[1], starts[7]
    for line in lines:  # every row lines up under the header
        assert line[status_col - 1] == " "
        assert line[status_col] != " "
        assert line[created_col : created_col + 19] == "2024-05-01 12:00:00"
    assert "2024-05-02 12:00:00" in lines[0]  # next attempt
    assert lines[0].split()[1:3] == ["retrying", sub]
    assert lines[1].split()[5:7] == ["8", "500"]

    code, out, _ = run(
        capsys, "deliveries", "list", *auth, "--status", "failed", "--subscription", sub
    )
    assert [int(line.split()[0]) for line in out.splitlines()[1:]] == [failed]

    code, out, _ = run(capsys, "deliveries", "list", *auth, "--limit", "2")
    assert len(out.splitlines()) == 4
    assert "more match" in out.splitlines()[-1]

    code, out, _ = run(capsys, "deliveries", "list", *auth, "--json", "--status", "failed")
    assert {d["status"] for d in json.loads(out)} == {"failed"}

    code, out, _ = run(capsys, "deliveries", "list", *auth, "--status", "cancelled")
    assert (code, out) == (0, "no deliveries match\n")

    code, _, err = run(capsys, "deliveries", "list", *auth, "--status", "bogus")
    assert code == 1
    assert "422: status: unknown status 'bogus'" in err


async def test_deliveries_show(
    db: Database, api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await add_subscription(db, "admin")
    delivery = await add_delivery(db, sub, status="failed", attempts=2, last_status_code=500)
    async with db.write() as session:
        session.add(
            DeliveryAttempt(
                delivery_id=delivery,
                attempted_at=T0,
                duration_ms=15000,
                error="timed out",
            )
        )
        session.add(
            DeliveryAttempt(
                delivery_id=delivery,
                attempted_at=T0 + timedelta(seconds=5),
                status_code=500,
                duration_ms=7,
                response_excerpt="boom\nstack",
            )
        )
        session.add(
            DeliveryAttempt(
                delivery_id=delivery,
                attempted_at=T0 + timedelta(seconds=9),
                status_code=500,
                duration_ms=3,
                trigger="manual",
            )
        )
    code, out, err = run(
        capsys, "deliveries", "show", str(delivery), "--api", api_url, "--token", ADMIN_TOKEN
    )
    assert (code, err) == (0, "")
    assert f"delivery:     {delivery}" in out
    assert "status:       failed" in out
    assert f"subscription: {sub}" in out
    assert "attempts:     3 (1 not from the schedule)" in out
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split() == [
        "#", "ATTEMPTED", "(UTC)", "BY", "CODE", "DURATION", "ERROR", "RESPONSE"
    ]  # fmt: skip
    assert table[1].split() == [
        "1",
        "2024-05-01",
        "12:00:00",
        "-",
        "-",
        "15000",
        "ms",
        "timed",
        "out",
        "-",
    ]
    assert table[2].split()[3:] == ["-", "500", "7", "ms", "-", "boom", "stack"]
    assert table[3].split()[3:5] == ["manual", "500"]

    code, _, err = run(
        capsys, "deliveries", "show", "999", "--api", api_url, "--token", ADMIN_TOKEN
    )
    assert code == 1
    assert err == "relay: 404: no delivery '999'\n"


async def test_deliveries_retry(
    db: Database, api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = await add_subscription(db, "admin")
    delivery = await add_delivery(db, sub, status="failed", attempts=8, last_status_code=500)
    code, out, err = run(
        capsys, "deliveries", "retry", str(delivery), "--api", api_url, "--token", ADMIN_TOKEN
    )
    assert (code, err) == (0, "")
    assert f"delivery {delivery}: retrying, a manual attempt is queued" in out
    async with db.read() as session:
        row = await session.get(Delivery, delivery)
    assert row is not None
    assert (row.status, row.manual_retry) == ("retrying", True)

    code, _, err = run(
        capsys, "deliveries", "retry", "999", "--api", api_url, "--token", ADMIN_TOKEN
    )
    assert code == 1
    assert err == "relay: 404: no delivery '999'\n"


def test_districts_list(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    auth = ("--api", api_url, "--token", ADMIN_TOKEN)
    code, out, _ = run(capsys, "districts", "list", *auth)
    assert code == 0
    assert out.startswith("no districts registered")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=api_url, headers=headers) as admin:
        for body in (
            {"id": "d1", "token": "t", "name": "Springfield"},
            {"id": "d22", "token": "t"},
        ):
            assert admin.post("/v1/districts", json=body).status_code == 201
        service = admin.post("/v1/tokens", json={"owner": "team-a"}).json()["token"]
    code, out, _ = run(capsys, "districts", "list", *auth)
    header, first, second = out.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "STATUS"]
    assert first.split()[:3] == ["d1", "Springfield", "active"]
    assert second.split()[:3] == ["d22", "-", "active"]
    assert header.index("STATUS") == first.index("active") == second.index("active")

    code, _, err = run(capsys, "districts", "list", "--api", api_url, "--token", service)
    assert code == 1
    assert "403: this route needs the admin token" in err


def test_connection_errors_are_clear(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "deliveries", "list", "--api", nowhere, "--token", "x")
    assert (code, out) == (1, "")
    assert err.startswith(f"relay: cannot reach the relay API at {nowhere}")
    assert "RELAY_API_URL" in err

    code, _, err = run(capsys, "districts", "list", "--api", api_url, "--token", "wrong")
    assert code == 1
    assert "refused the token (401 invalid or revoked token)" in err
    assert "--token" in err

    with pytest.raises(SystemExit) as exit_info:
        main(["deliveries", "list", "--limit", "0"])
    assert exit_info.value.code == 2


def test_token_and_url_from_environment(
    api_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "cli-data"
    monkeypatch.delenv("RELAY_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("RELAY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RELAY_API_URL", api_url)
    monkeypatch.chdir(tmp_path)  # no stray .env
    get_settings.cache_clear()
    try:
        code, _, err = run(capsys, "districts", "list")
        assert code == 1
        assert "no API token" in err
        assert not data_dir.exists()  # looking for the token never creates one

        data_dir.mkdir()
        (data_dir / "admin_token").write_text(ADMIN_TOKEN + "\n")
        code, out, err = run(capsys, "districts", "list")
        assert (code, err) == (0, "")
        assert out.startswith("no districts registered")

        monkeypatch.setenv("RELAY_ADMIN_TOKEN", "stale")
        get_settings.cache_clear()
        code, _, err = run(capsys, "districts", "list")
        assert code == 1
        assert "401" in err
    finally:
        get_settings.cache_clear()
