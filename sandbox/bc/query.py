"""OData query options as BC supports them: $filter (comparisons joined by and/or, parentheses),
$select, $top, $skip, server paging with `Prefer: odata.maxpagesize` and an opaque $skiptoken."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sandbox.bc.clock import parse_iso
from sandbox.bc.entities import EntityDef
from sandbox.bc.enums import ENUMS
from sandbox.bc.errors import BCError, bad_request

MAX_PAGE = 20000
Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<open>\()|(?P<close>\))|(?P<comma>,)"
    r"|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"|(?P<word>[A-Za-z_][\w.]*)|(?P<lit>[0-9a-fA-F][\w:.+\-]*|-[\w:.+\-]+))"
)
_OPS = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise bad_request(f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup or ""
        out.append(("lit" if kind == "guid" else kind, match.group(kind)))
        pos = match.end()
    return out


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) or b(r)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda r: a(r) and b(r)


class _Parser:
    def __init__(self, entity: EntityDef, text: str) -> None:
        self.entity, self.text = entity, text
        self.toks = _tokens(text)
        self.i = 0
        self.terms: list[tuple[str, str, Any]] = []  # every comparison: (field, operator, value)
        self.only_and = True  # no `or`/`not`: the comparisons are record filters (SetRange) in BC

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek()[0] != "end":
            raise bad_request(f"Syntax error at '{self.peek()[1]}' in '{self.text}'.")
        return pred

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while self.peek() == ("word", "or"):
            self.take()
            self.only_and = False
            left = _either(left, self.and_expr())
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while self.peek() == ("word", "and"):
            self.take()
            left = _both(left, self.unary())
        return left

    def unary(self) -> Predicate:
        if self.peek() == ("word", "not"):
            self.take()
            self.only_and = False
            inner = self.unary()
            return lambda r: not inner(r)
        if self.peek()[0] == "open":
            self.take()
            inner = self.or_expr()
            if self.take()[0] != "close":
                raise bad_request(f"')' expected in '{self.text}'.")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        kind, name = self.take()
        if kind != "word":
            raise bad_request(f"Syntax error at '{name}' in '{self.text}'.")
        if name in ("contains", "startswith", "endswith") and self.peek()[0] == "open":
            return self.function(name)
        default = self._field(name)
        op = self.take()[1]
        if op not in _OPS:
            raise bad_request(f"Syntax error: unknown operator '{op}' in '{self.text}'.")
        value = coerce(self.entity, name, default, self.take())
        self.terms.append((name, op, value))
        compare = _OPS[op]
        if isinstance(value, datetime):
            return lambda r: bool(r[name]) and compare(parse_iso(r[name]), value)
        if isinstance(value, str) and op in ("eq", "ne"):
            folded = value.lower()  # BC's SQL collation compares case-insensitively
            return lambda r: compare(str(r[name]).lower(), folded)
        return lambda r: compare(r[name], value)

    def function(self, func: str) -> Predicate:
        self.take()
        _, name = self.take()
        self._field(name)
        self.terms.append((name, func, None))
        if self.take()[0] != "comma":
            raise bad_request(f"',' expected in '{self.text}'.")
        kind, raw = self.take()
        if kind != "str" or self.take()[0] != "close":
            raise bad_request(f"Syntax error in '{self.text}'.")
        needle = raw[1:-1].replace("''", "'").lower()
        method = {"contains": "__contains__", "startswith": "startswith", "endswith": "endswith"}[func]
        return lambda r: bool(getattr(str(r[name]).lower(), method)(needle))

    def _field(self, name: str) -> Any:
        if name not in self.entity.fields:
            raise bad_request(
                f"Could not find a property named '{name}' on type 'Microsoft.NAV.{self.entity.entity}'."
            )
        return self.entity.fields[name]


def coerce(entity: EntityDef, name: str, default: Any, token: tuple[str, str]) -> Any:
    kind, raw = token
    if kind == "str":
        text = raw[1:-1].replace("''", "'")
        enum = ENUMS.get((entity.name, name))
        if enum is not None:  # either spelling: 'In Review' or 'In_x0020_Review' (sandbox/bc/enums.py)
            member = enum.canonical(text)
            if member is None:
                raise bad_request(f"Cannot convert the literal '{text}' to the expected type "
                                  f"'Microsoft.NAV.{enum.name}'.")
            return member
        return parse_iso(text) if name.endswith(("DateTime", "Date")) and text else text
    if raw == "null":
        return ""
    if isinstance(default, bool):
        if raw not in ("true", "false"):
            raise bad_request(f"'{raw}' is not a valid Edm.Boolean value for '{name}'.")
        return raw == "true"
    if name.endswith("DateTime"):
        try:
            return parse_iso(raw)
        except ValueError as exc:
            raise bad_request(f"'{raw}' is not a valid Edm.DateTimeOffset value.") from exc
    if isinstance(default, float | int):
        try:
            return float(raw)
        except ValueError as exc:
            raise bad_request(f"'{raw}' is not a valid number for '{name}'.") from exc
    return raw  # unquoted GUIDs, as BC accepts them for id fields


def parse_filter(entity: EntityDef, text: str | None) -> Predicate | None:
    if not text:
        return None
    try:
        return _Parser(entity, text).parse()
    except BCError:
        raise
    except (ValueError, IndexError, KeyError) as exc:
        raise bad_request(f"Invalid filter expression '{text}'.") from exc


def filter_terms(entity: EntityDef, text: str | None) -> tuple[list[tuple[str, str, Any]], bool]:
    """The comparisons of a `$filter` and whether they are joined by `and` only."""
    if not text:
        return [], True
    parser = _Parser(entity, text)
    parser.parse()
    return parser.terms, parser.only_and


def parse_select(entity: EntityDef, text: str | None) -> list[str] | None:
    if not text:
        return None
    fields = [f.strip() for f in text.split(",") if f.strip()]
    for name in fields:
        if name not in entity.fields:
            raise bad_request(
                f"Could not find a property named '{name}' on type 'Microsoft.NAV.{entity.entity}'."
            )
    return fields


def parse_orderby(entity: EntityDef, text: str | None) -> list[tuple[str, bool]]:
    """`$orderby=a desc,b` → [("a", True), ("b", False)]."""
    order: list[tuple[str, bool]] = []
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        name, _, direction = part.partition(" ")
        if name not in entity.fields or direction.strip().lower() not in ("", "asc", "desc"):
            raise bad_request(f"Invalid $orderby expression '{part}'.")
        order.append((name, direction.strip().lower() == "desc"))
    return order


def page_size(prefer: str | None) -> int | None:
    """The `odata.maxpagesize` preference, capped at BC's 20,000; None when absent."""
    if not prefer:
        return None
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
    return min(int(match.group(1)), MAX_PAGE) if match and int(match.group(1)) > 0 else None


def encode_skiptoken(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_skiptoken(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except ValueError as exc:
        raise bad_request("The skip token is not valid.", "BadRequest_InvalidToken") from exc
    if not isinstance(state, dict):
        raise bad_request("The skip token is not valid.", "BadRequest_InvalidToken")
    return state
