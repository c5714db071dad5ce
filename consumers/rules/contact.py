"""CONTACT: BC person contacts of a customer's company ⇄ Dataverse contacts under an account.

Matching looks for the same e-mail within the same parent, so two companies' "info@" contacts stay apart.
"""

from __future__ import annotations

from typing import Any

from consumers.errors import Skip
from consumers.rules.fields import FieldRule
from schemas.odata_filter import odata_text


class ContactRule(FieldRule):
    async def match(self, toward: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        parent_field = next(f for f in self.mapping.fields if f.transform == "parent")
        try:
            parent = await self.field_value(parent_field, toward, record)
        except Skip:
            return []
        email = record.get("emailaddress1" if toward == "bc" else "email")
        if not email:
            return []
        if toward == "bc":
            filter_ = f"email eq {odata_text(email)} and companyNumber eq {odata_text(parent['companyNumber'])}"
        else:
            account = parent["parentcustomerid@odata.bind"].split("(")[1].rstrip(")")
            filter_ = f"emailaddress1 eq {odata_text(email)} and _parentcustomerid_value eq {account}"
        return [r async for r in await self.records(toward, filter_)][:5]
