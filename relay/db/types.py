"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def storable(text: str) -> str:
    """``text`` as every database can hold it: PostgreSQL refuses NUL in text (SQLite keeps
    it), and a receiver's reply or a value Clever sent may carry one; it becomes U+FFFD, as a
    byte that is not UTF-8 does when decoded."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and made aware again on the way out. A naive value going in is refused rather than
    guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    # Each builds one function per dialect, instead of the decorator's own step followed by the
    # dialect's: on SQLite that was a %-format of seven fields per value, most of a page
    # store's CPU (three timestamps per delivery row, py-spy on the polling process,
    # bench/throughput.py). SQLite's text is SQLAlchemy's DATETIME format, so that stored
    # values compare as before: "YYYY-MM-DD HH:MM:SS.ffffff", naive UTC.

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        as_text = dialect.name == "sqlite"
        last: list[tuple[object, datetime | str]] = [(None, "")]

        def process(value: Any) -> datetime | str | None:
            if value is None:
                return None
            seen, converted = last[0]
            if value is seen:  # the same timestamp in every row of a batch (its "now")
                return converted
            utc = _naive_utc(value) if as_text else _aware_utc(value)
            converted = utc.isoformat(" ", "microseconds") if as_text else utc
            last[0] = (value, converted)  # one tuple, replaced whole: safe for any thread
            return converted

        return process

    # typed str in SQLAlchemy's stubs; what it returns goes on to the impl's literal processor
    def process_literal_param(  # type: ignore[override]
        self, value: Any, dialect: Dialect
    ) -> datetime | None:
        """A value written into the SQL itself (``literal_binds``): converted the same way."""
        if value is None:
            return None
        return _naive_utc(value) if dialect.name == "sqlite" else _aware_utc(value)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any]:
        def process(value: Any) -> datetime | None:
            if value is None:
                return None
            if isinstance(value, str):  # SQLite's text (what SQLAlchemy's DATETIME parses)
                value = datetime.fromisoformat(value)
            assert isinstance(value, datetime)
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

        return process


def _aware_utc(value: object) -> datetime:
    """``value`` in UTC; a naive one is refused rather than guessed at."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _naive_utc(value: object) -> datetime:
    """As SQLite keeps it: UTC without a time zone."""
    return _aware_utc(value).replace(tzinfo=None)
