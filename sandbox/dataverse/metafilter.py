"""The `$filter` that metadata queries take: `eq`/`ne` comparisons joined by and/or/not and parentheses.

Literals: 'strings' ('' escapes a quote), true/false/null, numbers, GUIDs and enum members written
`Microsoft.Dynamics.CRM.<Enum>'<Member>'` ("Query table definitions using the Web API" filters with
`RequiredLevel/Value eq Microsoft.Dynamics.CRM.AttributeRequiredLevel'ApplicationRequired'`). Property paths
may step into complex values (`RequiredLevel/Value`). Metadata names are compared exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from sandbox.dataverse import errors

Predicate = Callable[[dict[str, Any]], bool]
_TOKEN = re.compile(r"""\s*(?:
      (?P<enum>Microsoft\.Dynamics\.CRM\.\w+'(?:[^']|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    | (?P<number>-?\d+(?:\.\d+)?)(?![\w-])
    | (?P<paren>[()])
    | (?P<word>[A-Za-z_][\w/]*)
    )""", re.VERBOSE)


def parse(text: str | None, properties: Collection[str], type_name: str) -> Predicate:
    if not text:
        return lambda item: True
    return _Parser(text, properties, type_name).parse()


class _Parser:
    def __init__(self, text: str, properties: Collection[str], type_name: str) -> None:
        self.text, self.properties, self.type_name = text, properties, type_name
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while text[pos:].strip():
            match = _TOKEN.match(text, pos)
            if not match or match.lastgroup is None:
                raise self._error()
            self.tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        self.i = 0

    def _error(self) -> errors.DataverseError:
        return errors.bad_query(f"Syntax error in $filter '{self.text}'.")

    def _take(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise self._error()
        self.i += 1
        return self.tokens[self.i - 1]

    def _next_is(self, word: str) -> bool:
        return self.i < len(self.tokens) and self.tokens[self.i] == ("word", word)

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.i != len(self.tokens):
            raise self._error()
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._next_is("or"):
            self._take()
            parts.append(self._and())
        return lambda item: any(p(item) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._next_is("and"):
            self._take()
            parts.append(self._unary())
        return lambda item: all(p(item) for p in parts)

    def _unary(self) -> Predicate:
        if self._next_is("not"):
            self._take()
            inner = self._unary()
            return lambda item: not inner(item)
        if self.i < len(self.tokens) and self.tokens[self.i] == ("paren", "("):
            self._take()
            inner = self._or()
            if self._take() != ("paren", ")"):
                raise self._error()
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        kind, path = self._take()
        if kind != "word":
            raise self._error()
        if path.split("/")[0] not in self.properties:
            raise errors.no_property_of(self.type_name, path.split("/")[0])
        op_kind, op = self._take()
        if op_kind != "word" or op not in ("eq", "ne"):
            raise self._error()
        literal = self._literal()
        steps = path.split("/")

        def test(item: dict[str, Any]) -> bool:
            value: Any = item
            for step in steps:
                value = value.get(step) if isinstance(value, dict) else None
            return (value == literal) == (op == "eq")
        return test

    def _literal(self) -> Any:
        kind, text = self._take()
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "enum":
            return text[text.index("'") + 1:-1].replace("''", "'")
        if kind == "guid":
            return text.lower()
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "word" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        raise self._error()
