"""A customer's company contact among its contactsInformation, which lists the company's persons too
(page 30072 "APIV2 - Contacts Information"; shared/samples/bc-contacts-information.json)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from consumers.rules import lookups
from tests.conftest import sample

CUSTOMER = "3f9a1c2e-5b7d-4e8f-a0b1-c2d3e4f5a6b7"


class FakeBc:
    def __init__(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        self.rows, self.calls = rows, []

    async def list(self, entity_set: str, **options: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(entity_set)
        for row in self.rows.get(entity_set, []):
            yield row


@pytest.mark.parametrize("order", ["company first", "persons first"])
async def test_the_company_contact_is_taken_by_its_type_wherever_it_is_listed(order: str) -> None:
    rows = sample("bc-contacts-information.json")["value"]
    if order == "persons first":
        rows = rows[::-1]
    ctx: Any = SimpleNamespace(bc=FakeBc({f"customers({CUSTOMER})/contactsInformation": rows}), cache={})
    company = await lookups.company_contact(ctx, CUSTOMER)
    assert company is not None and (company["contactType"], company["contactNumber"]) == ("Company", "CT000510")


async def test_a_company_contact_leads_to_its_customer_and_is_remembered() -> None:
    information = sample("bc-contacts-information.json")["value"][::-1]
    bc = FakeBc({"contacts": [{"id": "c1", "number": "CT000510", "displayName": "Fabrikam Bikes Ltd.",
                               "type": "Company"}],
                 "customers": [{"id": "other"}, {"id": CUSTOMER}],  # two customers of that name
                 f"customers({CUSTOMER})/contactsInformation": information,
                 "customers(other)/contactsInformation": []})
    ctx: Any = SimpleNamespace(bc=bc, cache={})
    assert await lookups.customer_of_company(ctx, "CT000510") == CUSTOMER
    calls = len(bc.calls)
    assert await lookups.customer_of_company(ctx, "CT000510") == CUSTOMER
    assert len(bc.calls) == calls  # remembered
    assert await lookups.customer_of_company(ctx, "CT999990") is None
