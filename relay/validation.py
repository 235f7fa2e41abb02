"""pydantic's validation errors in words a person reads: what is wrong with a field, never a
regex or pydantic's own wording for the common cases. One place for the API's 422s
(``relay.api.errors``) and the settings' start-up errors (``relay.settings``); each caller
adds the field's name and decides whether the value may be repeated.
"""

from __future__ import annotations

from typing import Any

from pydantic import StringConstraints

#: What a constrained string must look like, in words, by its pattern: registered with
#: :func:`described_pattern` where the pattern is defined, so no error message shows a regex.
PATTERN_MEANINGS: dict[str, str] = {}

_TYPE_WORDS = {
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": 'must be a list, e.g. ["users"]',
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "datetime_type": "must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z",
    "datetime_parsing": "must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z",
    "datetime_from_date_parsing": "must be an ISO 8601 timestamp, e.g. 2024-05-01T12:00:00Z",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def described_pattern(
    pattern: str, meaning: str, min_length: int | None = None, max_length: int | None = None
) -> StringConstraints:
    """``StringConstraints(pattern=…)`` whose mismatch reads ``<field>: <meaning>``."""
    PATTERN_MEANINGS[pattern] = meaning
    return StringConstraints(pattern=pattern, min_length=min_length, max_length=max_length)


def _plural(n: object, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def what_is_wrong(error: Any, field: str) -> str:
    """pydantic's error as a person would say it; never a regex, never pydantic's wording
    for the common cases (the rare others keep pydantic's message)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "value_error":  # our validators' own words; "secret: secret must …" reads once
        return str(error["msg"]).removeprefix("Value error, ").removeprefix(f"{field} ")
    if kind == "string_pattern_mismatch":
        return PATTERN_MEANINGS.get(ctx.get("pattern", ""), "has characters that are not allowed")
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must be at least {_plural(n, 'character')}"
    if kind == "string_too_long":
        return f"must be at most {_plural(ctx.get('max_length'), 'character')}"
    if kind == "too_short":
        return f"must have at least {_plural(ctx.get('min_length'), 'item')}"
    if kind == "too_long":
        return f"must have at most {_plural(ctx.get('max_length'), 'item')}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx.get(key)}"
    return _TYPE_WORDS.get(kind, str(error["msg"]))
