"""ITEM-PRODUCT and RESOURCE-PRODUCT: products are created in Draft by Dataverse and must be published."""

from __future__ import annotations

from typing import Any

from consumers.rules.base import Rule


class ProductRule(Rule):
    async def create(self, toward: str, payload: dict[str, Any]) -> dict[str, Any]:
        created = await super().create(toward, payload)
        if toward != "dataverse" or created.get("statecode") == 0:
            return created
        # Dataverse creates every product as Draft; orders in Sales can only use Active ones.
        return await self.ctx.dv.update(self.dataverse_set, self.record_id("dataverse", created),
                                        {"statecode": 0, "statuscode": 1}, created.get("@odata.etag"))
