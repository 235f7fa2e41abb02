"""Log lines as a terminal shows them: a timestamp, each line once, no uvicorn colour copy,
nothing from arq's routine, alembic's preamble dropped (issue 14, item 6)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator

import pytest

from relay.logs import configure_logging
from relay.polling.poller import IngestSummary


class Captured:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[Captured]:
    """What the handler configure_logging installs writes to stderr."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield Captured(capsys)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_text_lines_have_a_timestamp_and_no_colour_copy(captured: Captured) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("relay.test.colour").info(
        "Started server process [%d]", 42, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    logging.getLogger("relay.poll").info("events stored", extra={"stored": 3})
    lines = captured.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(
        stamp + r" info    relay\.test\.colour: Started server process \[42\]", lines[0]
    )
    assert re.fullmatch(stamp + r" info    relay\.poll: events stored stored=3", lines[1])
    assert len(lines) == 2


def test_routine_lines_are_quiet_at_info_and_shown_at_debug(captured: Captured) -> None:
    configure_logging("INFO", "json")
    arq = logging.getLogger("arq.worker")
    arq.info("Starting worker for %d functions: %s", 3, "cron:reconcile")  # once: kept
    arq.info("%6.2fs → %s(%s)%s", 0.5, "cron:reconcile", "", "")  # every cron run: dropped
    arq.info("%6.2fs ← %s ● %s", 0.01, "cron:reconcile", 0)
    arq.info("recording health: %s", "j_complete=1")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("alembic.runtime.migration").info("Will assume non-transactional DDL.")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade  -> 0001, initial")
    arq.warning("%6.2fs ! %s failed", 0.5, "cron:reconcile")
    messages = [json.loads(line)["msg"] for line in captured.getvalue().splitlines()]
    assert messages == [
        "Starting worker for 3 functions: cron:reconcile",
        "Running upgrade  -> 0001, initial",
        "  0.50s ! cron:reconcile failed",
    ]
    configure_logging("DEBUG", "json")
    arq.info("%6.2fs → %s(%s)%s", 0.5, "cron:reconcile", "", "")
    assert json.loads(captured.getvalue().splitlines()[-1])["msg"] == "  0.50s → cron:reconcile()"


def test_ingest_summary_one_line_per_burst_or_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.poll")
    summary = IngestSummary(every=3600)
    for _ in range(3):  # caught-up polls of one page each: summed, not logged yet
        summary.add(2, 4, "c1")
        summary.burst_ended({})
    assert caplog.records == []
    for n in range(5):  # a backlog paged in one burst: one line when it ends
        summary.add(1000, 2000, f"c{n}")
    summary.burst_ended({"district_id": "d1"})
    [line] = caplog.records
    assert (line.pages, line.stored, line.deliveries, line.cursor) == (8, 5006, 10012, "c4")  # type: ignore[attr-defined]
    assert line.district_id == "d1"  # type: ignore[attr-defined]
    summary.flush({})
    assert len(caplog.records) == 1  # nothing new: no line
    summary.add(1, 1, "c9")
    summary.flush({})  # the poller stops: what is pending is said
    assert caplog.records[-1].stored == 1  # type: ignore[attr-defined]
    assert IngestSummary(every=0).every == 0
