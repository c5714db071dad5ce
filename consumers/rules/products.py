"""ITEM-PRODUCT and RESOURCE-PRODUCT: products are created in Draft by Dataverse and must be published.

After every product write toward Sales, the product's own unit price is kept in the integration's default
price list (`consumers/rules/prices.py`), so that orders in Sales can be priced.
"""

from __future__ import annotations

from typing import Any

from consumers.rules.fields import FieldRule
from consumers.rules.prices import keep_default_price


class ProductRule(FieldRule):
    async def create(self, toward: str, payload: dict[str, Any]) -> dict[str, Any]:
        created = await super().create(toward, payload)
        if toward != "dataverse":
            return created
        if created.get("statecode") != 0:
            # Dataverse creates every product as Draft; orders in Sales can only use Active ones.
            created = await self.ctx.dv.update(self.dataverse_set, self.record_id("dataverse", created),
                                               {"statecode": 0, "statuscode": 1}, created.get("@odata.etag"))
        return await keep_default_price(self.ctx, created, payload)

    async def update(self, toward: str, target: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        updated = await super().update(toward, target, payload)
        if toward != "dataverse":
            return updated
        return await keep_default_price(self.ctx, updated or target, payload)
