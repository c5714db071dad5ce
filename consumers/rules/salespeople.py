"""SALESPEOPLE: Dataverse users → BC salespeople; a new salesperson gets the next free `SPnnnn` code."""

from __future__ import annotations

import re
from typing import Any

from consumers.rules.base import Rule
from service.connectors.http import ApiError

_CODE = re.compile(r"^SP(\d{4,})$")


class SalespeopleRule(Rule):
    async def next_code(self) -> str:
        highest = 0
        async for person in self.ctx.bc.list("salespeoplePurchasers", select=["code"]):
            match = _CODE.match(str(person.get("code", "")))
            if match:
                highest = max(highest, int(match.group(1)))
        return f"SP{highest + 1:04d}"

    async def create(self, toward: str, payload: dict[str, Any]) -> dict[str, Any]:
        if toward != "bc":
            return await super().create(toward, payload)
        for _ in range(5):  # two workers may pick the same code at once: BC refuses the second, take the next
            try:
                return await super().create(toward, {"code": await self.next_code(), **payload})
            except ApiError as exc:
                if exc.code != "Internal_EntityWithSameKeyExists":
                    raise
        raise ApiError(409, "Internal_EntityWithSameKeyExists", "no free salesperson code after 5 attempts")
