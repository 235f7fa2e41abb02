"""Logging: one JSON object per line (or plain text on a terminal), with the ``extra`` fields
a record carries (district, event, delivery and subscription ids), and a timestamp either way.

Quiet at INFO: what repeats on its own (arq's two lines per cron run, per-page and
per-attempt detail, alembic's preamble) is at DEBUG or filtered out, so a terminal shows what
changed. ``--log-level DEBUG`` shows all of it.

Nothing here redacts: the rule is that no code passes a token or a secret to a logger.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# uvicorn adds a copy of its message with terminal colour codes to every record
_DROPPED = _STANDARD | {"color_message"}
#: (logger prefix, message format start) of lines said at every start that tell nothing
_PREAMBLE = (
    ("alembic.runtime.migration", "Context impl "),
    ("alembic.runtime.migration", "Will assume "),
)
#: and of routine INFO lines, shown only at DEBUG: arq's two per cron run (job start and end,
#: "%6.2fs → …" / "%6.2fs ← …") and its health record; its start-up lines stay
_ROUTINE = (("arq", "%6.2fs "), ("arq", "recording health"))


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _DROPPED}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        when = _timestamp(record).replace("+00:00", "Z")
        line = f"{when} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        line = f"{line} {extras}" if extras else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    fmt = fmt or os.environ.get("RELAY_LOG_FORMAT") or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    unsaid = _PREAMBLE if root.level <= logging.DEBUG else _PREAMBLE + _ROUTINE
    handler.addFilter(lambda record: not _matches(record, unsaid))
    for noisy in ("uvicorn.access", "httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _matches(record: logging.LogRecord, lines: tuple[tuple[str, str], ...]) -> bool:
    return record.levelno <= logging.INFO and any(
        record.name.startswith(name) and str(record.msg).startswith(start) for name, start in lines
    )


def quiet_server_banners() -> None:
    """For commands that print their own banner (``relay run``): uvicorn's start and stop
    lines, one set per server, say nothing the banner does not (warnings still show)."""
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
