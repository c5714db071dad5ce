"""OData query options of the Web API: `$select`, `$filter` and `$orderby` over in-memory rows.

`$filter` supports eq ne gt ge lt le, and/or/not, parentheses, contains/startswith/endswith, and the
literals null, true/false, numbers, 'strings' ('' escapes a quote), GUIDs and ISO dates. String
comparisons ignore case, as Dataverse's database collation does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.dataverse import errors
from sandbox.dataverse.schema import DATETIME, LOOKUP, Table
from sandbox.dataverse.store import Row
from sandbox.dataverse.values import EntityRef, parse_datetime

Predicate = Callable[[Row], bool]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w-])
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    | (?P<number>-?\d+(?:\.\d+)?[mMdDfFlL]?)(?![\w-])
    | (?P<paren>[(),])
    | (?P<word>[A-Za-z_][\w./]*)
    )""", re.VERBOSE)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"contains", "startswith", "endswith"}


def column_value(table: Table, row: Row, name: str) -> Any:
    """The value a query sees for a property name (`_x_value` is the id of lookup x)."""
    if name.startswith("_") and name.endswith("_value"):
        ref = row.get(name[1:-6])
        return ref.id if isinstance(ref, EntityRef) else None
    return row.get(name)


def check_property(table: Table, name: str) -> str:
    """A readable property of the Web API, or the error Dataverse gives for an unknown one."""
    if name.startswith("_") and name.endswith("_value") and name[1:-6] in table.lookups:
        return name
    if table.column_type(name) not in (None, LOOKUP):
        return name
    raise errors.no_property(table.logical, name)


def parse_select(table: Table, text: str | None) -> list[str] | None:
    if not text:
        return None
    return [check_property(table, part.strip()) for part in text.split(",") if part.strip()]


def parse_orderby(table: Table, text: str | None) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for part in (text or "").split(","):
        bits = part.split()
        if not bits:
            continue
        if len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
            raise errors.bad_query(f"Syntax error in $orderby '{text}'.")
        keys.append((check_property(table, bits[0]), len(bits) == 2 and bits[1].lower() == "desc"))
    return keys


def sort_rows(table: Table, rows: list[Row], keys: list[tuple[str, bool]]) -> list[Row]:
    # The primary key breaks ties, which keeps paging stable; nulls sort first ascending (SQL Server).
    ordered = sorted(rows, key=lambda r: r[table.primary_id])
    for name, desc in reversed(keys):
        ordered.sort(key=_key_for(table, name), reverse=desc)
    return ordered


def _key_for(table: Table, name: str) -> Callable[[Row], tuple[int, Any]]:
    return lambda row: _sort_key(column_value(table, row, name))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (1, value.lower())
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (1, value)


def parse_filter(table: Table, text: str | None) -> Predicate:
    if not text:
        return lambda row: True
    return _Parser(table, text).parse()


class _Parser:
    def __init__(self, table: Table, text: str) -> None:
        self.table = table
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match or match.lastgroup is None:
                raise self._error(pos)
            self.tokens.append((match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup)))
            pos = match.end()
        self.i = 0

    def _error(self, pos: int | None = None) -> errors.DataverseError:
        if pos is None:
            pos = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        return errors.bad_query(f"Syntax error at position {pos} in '{self.text}'.")

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise self._error()
        self.i += 1
        return token

    def _is_word(self, *words: str) -> bool:
        token = self._peek()
        return token is not None and token[0] == "word" and token[1].lower() in words

    def _expect(self, value: str) -> None:
        token = self._take()
        if token[1] != value:
            raise self._error(token[2])

    def parse(self) -> Predicate:
        predicate = self._or()
        if self._peek() is not None:
            raise self._error()
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._is_word("or"):
            self._take()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._is_word("and"):
            self._take()
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def _unary(self) -> Predicate:
        if self._is_word("not"):
            self._take()
            inner = self._unary()
            return lambda row: not inner(row)
        token = self._peek()
        if token is not None and token[1] == "(":
            self._take()
            inner = self._or()
            self._expect(")")
            return inner
        if token is not None and token[0] == "word" and token[1].lower() in _FUNCTIONS:
            return self._function()
        return self._comparison()

    def _function(self) -> Predicate:
        name = self._take()[1].lower()
        self._expect("(")
        column = self._property()
        self._expect(",")
        kind, literal = self._literal()
        self._expect(")")
        if kind != "string":
            raise self._error()
        needle = str(literal).lower()
        table = self.table

        def test(row: Row) -> bool:
            value = column_value(table, row, column)
            if not isinstance(value, str):
                return False
            hay = value.lower()
            return needle in hay if name == "contains" else (
                hay.startswith(needle) if name == "startswith" else hay.endswith(needle))
        return test

    def _property(self) -> str:
        token = self._take()
        if token[0] != "word":
            raise self._error(token[2])
        return check_property(self.table, token[1])

    def _literal(self) -> tuple[str, Any]:
        kind, text, pos = self._take()
        if kind == "string":
            return "string", text[1:-1].replace("''", "'")
        if kind == "guid":
            return "guid", text.lower()
        if kind == "datetime":
            return "datetime", parse_datetime(text if "T" in text else f"{text}T00:00:00Z")
        if kind == "number":
            text = text.rstrip("mMdDfFlL")
            return "number", float(text) if "." in text else int(text)
        if kind == "word" and text in ("null", "true", "false"):
            return "const", {"null": None, "true": True, "false": False}[text]
        raise self._error(pos)

    def _comparison(self) -> Predicate:
        column = self._property()
        token = self._take()
        op = token[1].lower()
        if token[0] != "word" or op not in _COMPARISONS:
            raise self._error(token[2])
        kind, literal = self._literal()
        if self.table.column_type(column) == DATETIME and kind == "string":
            literal = parse_datetime(literal)
        table = self.table
        return lambda row: _compare(column_value(table, row, column), op, literal)


def _compare(value: Any, op: str, literal: Any) -> bool:
    if literal is None or value is None:
        if op == "eq":
            return value is None and literal is None
        if op == "ne":
            return not (value is None and literal is None)
        return False
    if isinstance(value, str) and isinstance(literal, str):
        value, literal = value.lower(), literal.lower()
    try:
        if op == "eq":
            return bool(value == literal)
        if op == "ne":
            return bool(value != literal)
        if op == "gt":
            return bool(value > literal)
        if op == "ge":
            return bool(value >= literal)
        if op == "lt":
            return bool(value < literal)
        return bool(value <= literal)
    except TypeError:
        return False
