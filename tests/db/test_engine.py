"""A database error never carries the statement's bound parameters (tokens, secrets, student
records) into its text: that text is what gets logged."""

from __future__ import annotations

import logging
import traceback

import pytest
from sqlalchemy.exc import IntegrityError

from relay.db import Database
from relay.db.models import District


async def test_a_failed_statement_does_not_show_its_parameters(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    token = "district-token-that-must-stay-secret"
    async with db.write() as session:
        session.add(District(id="d1", token=token))
    with pytest.raises(IntegrityError) as failed:
        async with db.write() as session:
            session.add(District(id="d1", token=token))
    logging.getLogger("relay.test").exception("as a caller would log it", exc_info=failed.value)
    shown = "".join(traceback.format_exception(failed.value)) + caplog.text
    assert "districts" in shown  # the statement is named
    assert "hidden" in shown
    assert token not in shown
