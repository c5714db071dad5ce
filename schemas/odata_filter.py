"""Evaluate a mapping's OData `$filter` against one record (the same text lists records in bulk).

Supports what the default filters and an operator's simple edits need: comparisons (`eq ne gt ge lt
le`) of a field with a literal ('text', numbers, true/false, null), joined by `and`/`or`, with
parentheses. String equality is case-insensitive, as both systems compare. Business Central API v2.0 writes
enum values XML-name encoded (`_x0020_` for the blank member, `In_x0020_Review`); they compare decoded here, as
value and as literal: `blocked eq ' '` and `blocked eq '_x0020_'` both hold for a customer that is not blocked.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.bc_metadata import decode_name

_TOKEN = re.compile(r"\s*(?:(\()|(\))|('(?:[^']|'')*')|([A-Za-z_][\w/]*)|(-?\d+(?:\.\d+)?))")
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


class FilterError(ValueError):
    pass


def odata_text(value: str) -> str:
    """A string literal for an OData `$filter` (a quote doubled). Written here, in schemas/, so that the worker's
    rules and the api's bulk matching (service/matching.py) share it; consumers/rules/context.py has the same."""
    return "'" + value.replace("'", "''") + "'"


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FilterError(f"cannot read the filter at {text[position:position + 20]!r}")
        tokens.append(next(group for group in match.groups() if group is not None))
        position = match.end()
    return tokens


def _literal(word: str) -> Any:
    if word.startswith("'"):
        return word[1:-1].replace("''", "'")
    if word in ("true", "false"):
        return word == "true"
    if word == "null":
        return None
    try:
        return float(word) if "." in word else int(word)
    except ValueError as exc:
        raise FilterError(f"expected a literal, got {word!r}") from exc


def _compare(value: Any, op: str, literal: Any) -> bool:
    if isinstance(value, str) and isinstance(literal, str):
        value, literal = _text(value), _text(literal)
    if op == "eq":
        return bool(value == literal)
    if op == "ne":
        return bool(value != literal)
    if value is None or literal is None:
        return False
    return {"gt": value > literal, "ge": value >= literal, "lt": value < literal, "le": value <= literal}[op]


def _text(text: str) -> str:
    return decode_name(text).strip().lower()


def comparisons(text: str | None) -> list[tuple[str, str, Any]]:
    """(field, operator, literal) of every comparison in a filter (raises FilterError when it cannot be read)."""
    if not text or not text.strip():
        return []
    validate(text)
    tokens = _tokens(text)
    return [(tokens[i - 1], token, _literal(tokens[i + 1])) for i, token in enumerate(tokens)
            if token in _OPS and 0 < i < len(tokens) - 1]


def fields(text: str | None) -> list[str]:
    """The field names a filter compares (raises FilterError when it cannot be read)."""
    return list(dict.fromkeys(field for field, _, _ in comparisons(text)))


def validate(text: str) -> None:
    """Raise FilterError unless the filter can be read (and evaluated)."""
    matches(text, {})


def matches(text: str | None, record: dict[str, Any]) -> bool:
    """Whether the record passes the filter (no filter: it does)."""
    if not text or not text.strip():
        return True
    tokens = _tokens(text)
    position = 0

    def expression() -> bool:
        nonlocal position
        result = term()
        while position < len(tokens) and tokens[position] == "or":
            position += 1
            right = term()
            result = result or right
        return result

    def term() -> bool:
        nonlocal position
        result = factor()
        while position < len(tokens) and tokens[position] == "and":
            position += 1
            right = factor()
            result = result and right
        return result

    def factor() -> bool:
        nonlocal position
        if tokens[position] == "(":
            position += 1
            result = expression()
            if position >= len(tokens) or tokens[position] != ")":
                raise FilterError("unbalanced parentheses")
            position += 1
            return result
        if position + 2 >= len(tokens):
            raise FilterError("incomplete comparison")
        field, op, literal = tokens[position], tokens[position + 1], tokens[position + 2]
        if op not in _OPS:
            raise FilterError(f"unknown operator {op!r}")
        position += 3
        return _compare(record.get(field), op, _literal(literal))

    result = expression()
    if position != len(tokens):
        raise FilterError(f"unexpected {tokens[position]!r}")
    return result
