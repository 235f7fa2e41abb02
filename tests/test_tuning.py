"""Derived values are derived in one place, from the settings they depend on."""

from __future__ import annotations

from pathlib import Path

from relay.settings import load_settings
from relay.tuning import Timeouts


def test_the_claim_lapses_a_fixed_margin_after_the_delivery_timeout(tmp_path: Path) -> None:
    tuning = load_settings(delivery_timeout=7, data_dir=tmp_path, _env_file=None).tuning
    assert tuning.timeouts.delivery == 7
    assert tuning.timeouts.job == 7 + 5
    assert tuning.timeouts.claim_lapse == 7 + 15
    assert Timeouts().claim_lapse == 15 + 15
