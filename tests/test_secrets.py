"""Every process of a deployment shares its secrets (``relay.secrets``): outside ``relay run``
a process without them refuses to start, naming them, instead of generating its own."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest

from relay._exceptions import ConfigError
from relay.secrets import resolve_keyring, resolve_secrets
from relay.settings import Settings, load_settings
from tests.support.config import ADMIN_TOKEN, ENCRYPTION_KEY
from tests.support.processes import RelayProcess
from tests.support.servers import free_port


def _bare(tmp_path: Path, **values: str) -> Settings:
    return load_settings(data_dir=tmp_path / "data", _env_file=None, **values)


def test_without_secrets_a_process_refuses_naming_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_secrets(_bare(tmp_path))
    message = str(caught.value)
    for name in ("RELAY_ADMIN_TOKEN", "RELAY_SECRET_KEY", "RELAY_ENCRYPTION_KEY"):
        assert name in message
    assert "relay keys new" in message
    assert not (tmp_path / "data").exists()  # nothing generated behind the operator's back
    with pytest.raises(ConfigError, match=r"^RELAY_ENCRYPTION_KEY: not set"):
        resolve_keyring(_bare(tmp_path, secret_key="k", admin_token="t"))


def test_relay_run_generates_them_once_and_its_companions_read_them(tmp_path: Path) -> None:
    made = resolve_secrets(_bare(tmp_path), generate=True)
    assert made.admin_token_generated
    for name in ("admin_token", "secret_key", "encryption_key"):
        assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    again = resolve_secrets(_bare(tmp_path))  # a relay serve started in the same folder
    assert again == made.__class__(made.admin_token, made.secret_key, made.encryption_key)
    resolve_keyring(_bare(tmp_path))  # a relay worker there


def _serve(tmp_path: Path, name: str, db_url: str, secrets: dict[str, str]) -> RelayProcess:
    port = free_port()
    env = {"RELAY_DATABASE_URL": db_url, "RELAY_DATA_DIR": str(tmp_path / name), **secrets}
    process = RelayProcess(["serve", "--port", str(port)], env, tmp_path / f"{name}.log")
    process.port = port  # type: ignore[attr-defined]
    return process


def _up(process: RelayProcess) -> str:
    url = f"http://127.0.0.1:{process.port}"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz")
            return url
        except httpx.TransportError:
            assert process.proc.poll() is None, process.output()
            time.sleep(0.1)
    raise AssertionError(process.output())


def test_two_replicas_from_different_folders(tmp_path: Path, database_url: str) -> None:
    # with nothing shared, both refuse, naming what to set
    for name in ("a", "b"):
        process = _serve(tmp_path, name, database_url, {})
        assert process.proc.wait(30) == 2
        assert "RELAY_SECRET_KEY" in process.output()
        assert "RELAY_ENCRYPTION_KEY" in process.output()
        process.stop()
    # with the same secrets, a token minted on one works on the other
    shared = {
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_SECRET_KEY": "shared-signing-key",
        "RELAY_ENCRYPTION_KEY": ENCRYPTION_KEY,
    }
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    one, two = (_serve(tmp_path, n, database_url, shared) for n in ("c", "d"))
    try:
        first, second = _up(one), _up(two)
        minted = httpx.post(f"{first}/v1/tokens", json={"owner": "team"}, headers=admin)
        assert minted.status_code == 201
        team = {"Authorization": f"Bearer {minted.json()['token']}"}
        created = httpx.post(
            f"{second}/v1/subscriptions", json={"url": "https://example.com/hook"}, headers=team
        )
        assert created.status_code == 201, created.text
        seen = httpx.get(f"{first}/v1/subscriptions/{created.json()['id']}", headers=team)
        assert seen.status_code == 200
    finally:
        one.stop()
        two.stop()
    assert "secrets from the environment" in one.output()
    assert ENCRYPTION_KEY not in one.output()
    assert "shared-signing-key" not in one.output()
