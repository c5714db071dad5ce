"""SALESPEOPLE: Dataverse users → BC salespeople; a new salesperson gets the next free `SPnnnn` code.

BC has no sequence to draw from: the next code is the highest one plus one, and BC refuses a code that
exists. Creates in one worker take turns (several Sales users created together would otherwise all pick the
same code, and only one would win each round); workers that pick the same code at once retry after a short
random pause.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from consumers.rules.context import SyncContext
from consumers.rules.fields import FieldRule
from schemas.mappings import TableMapping
from service.connectors.http import ApiError

_CODE = re.compile(r"^SP(\d{4,})$")


CODE_ATTEMPTS = 8


class SalespeopleRule(FieldRule):
    def __init__(self, mapping: TableMapping, ctx: SyncContext) -> None:
        super().__init__(mapping, ctx)
        self._allocating = asyncio.Lock()

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
        for _ in range(CODE_ATTEMPTS):
            try:
                async with self._allocating:
                    return await super().create(toward, {"code": await self.next_code(), **payload})
            except ApiError as exc:
                if exc.code != "Internal_EntityWithSameKeyExists":
                    raise
            await asyncio.sleep(random.uniform(0.05, 0.3))  # noqa: S311 (jitter) another worker took the code
        raise ApiError(409, "Internal_EntityWithSameKeyExists",
                       f"no free salesperson code after {CODE_ATTEMPTS} attempts")
