"""``relay records list|show`` and ``relay districts resync`` against a real API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from relay.api.app import create_app
from relay.clever.events import CleverEvent
from relay.cli import main
from relay.db import Database
from relay.db.models import District
from relay.polling.store import store_page
from relay.secrets import RuntimeSecrets
from relay.settings import Settings
from tests.support.config import ADMIN_TOKEN
from tests.support.servers import serve

T0 = int(datetime(2026, 11, 3, tzinfo=UTC).timestamp())


@pytest.fixture
def api_url(settings: Settings, runtime: RuntimeSecrets) -> Iterator[str]:
    with serve(create_app(settings, runtime)) as server:
        yield server.url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_records_list_show_and_districts_resync(
    db: Database, api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with db.write() as session:
        session.add(District(id="d1", token="t", lease_owner="A"))
    student = {"id": "u1", "name": {"first": "Ada", "last": "King"}, "roles": {"student": {}}}
    raw = {"id": f"{T0:08x}{1:016x}", "type": "users.created", "data": {"object": student}}
    event = CleverEvent(raw["id"], "users.created", datetime.fromtimestamp(T0, UTC), raw)
    await store_page(
        db,
        district_id="d1",
        lease_owner="A",
        expected_cursor=None,
        events=[event],
        caught_up=True,
        lease_seconds=5,
    )
    auth = ("--api", api_url, "--token", ADMIN_TOKEN)
    code, out, err = run(capsys, "records", "list", *auth, "--role", "student")
    assert (code, err) == (0, "")
    header, line = out.splitlines()
    assert header.split()[:4] == ["TYPE", "ID", "DISTRICT", "NAME"]
    assert line.split()[:5] == ["users", "u1", "d1", "Ada", "King"]
    code, out, _ = run(capsys, "records", "list", *auth, "--role", "teacher")
    assert code == 0
    assert "no records" in out
    code, out, _ = run(capsys, "records", "show", *auth, "u1")
    assert code == 0
    assert json.loads(out)["object"] == student
    code, _, err = run(capsys, "records", "show", *auth, "u9")
    assert code == 1
    assert "u9" in err

    code, out, err = run(capsys, "districts", "resync", *auth, "d1", "--no-created")
    assert (code, err) == (0, "")
    assert "sync 1 of d1 started" in out
    code, out, err = run(capsys, "districts", "resync", *auth, "d1")
    assert code == 1
    assert "already syncing" in err
    code, out, _ = run(capsys, "districts", "list", *auth)
    assert "syncing" in out
    assert "running (0 read, +0 ~0 -0)" in out
