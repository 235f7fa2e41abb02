"""A bad setting stops the process with a line naming the variable and what is wrong, in
words, without repeating the value (it may hold a password or a key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay._exceptions import ConfigError
from relay.settings import load_settings


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"poll_interval": "abc"}, "RELAY_POLL_INTERVAL: must be a number"),
        ({"reconcile_interval": 0}, "RELAY_RECONCILE_INTERVAL: must be at least 1"),
        ({"metrics_port": 99999}, "RELAY_METRICS_PORT: must be at most 65535"),
        ({"allow_loopback": "maybe"}, "RELAY_ALLOW_LOOPBACK: must be true or false"),
        ({"poll_nice": 20}, "RELAY_POLL_NICE: must be at most 19"),
        ({"poll_process": "sometimes"}, "RELAY_POLL_PROCESS: must be true or false"),
    ],
)
def test_bad_settings_are_named_in_words(
    tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(data_dir=tmp_path, _env_file=None, **overrides)
    assert str(raised.value) == f"invalid configuration: {expected}"


def test_a_bad_database_url_is_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(database_url="mysql://u:hunter2@db/x", data_dir=tmp_path, _env_file=None)
    assert "RELAY_DATABASE_URL" in str(raised.value)
    assert "hunter2" not in str(raised.value)
