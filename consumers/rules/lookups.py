"""Lookups through another mapping's couplings: currency, salesperson, unit of measure, parent account.

Each resolves a reference on one side to the coupled record on the other. When the referenced record is
not coupled yet, it is synchronized first where its mapping's direction allows (the engine's
`sync_dependency`); otherwise MissingDependency names what is missing. Lookups toward Dataverse are written
by their column's name (`ownerid@odata.bind`); the Dataverse client names them as the org does.
"""

from __future__ import annotations

import time
from typing import Any

from consumers.errors import MissingDependency, Skip
from consumers.rules.context import SyncContext
from schemas.odata_filter import odata_text
from service.logging import get_logger
from service.store import couplings

log = get_logger(__name__)


async def coupled_id(ctx: SyncContext, mapping: str, side: str, record_id: str) -> str | None:
    """The other side's id of a coupled record, or None."""
    async with ctx.db.session() as session:
        coupling = await couplings.find(session, mapping, side, record_id)
    if coupling is None:
        return None
    return coupling.dataverse_id if side == "bc" else coupling.bc_id


async def by_code(ctx: SyncContext, mapping: str, code: str) -> str | None:
    """The Dataverse id coupled to the BC record with this code, from the store (the coupling keeps the code:
    a rename in BC reaches it with that record's own synchronization). None: ask BC."""
    async with ctx.db.session() as session:
        coupling = await couplings.find_by_key(session, mapping, code)
    return coupling.dataverse_id if coupling is not None else None


async def code_of(ctx: SyncContext, mapping: str, dataverse_id: str) -> tuple[str | None, str | None]:
    """(BC id, BC code) of the record coupled to this Dataverse record; the code None when the coupling does
    not keep it yet."""
    async with ctx.db.session() as session:
        coupling = await couplings.find(session, mapping, "dataverse", dataverse_id)
    return (coupling.bc_id, coupling.bc_key) if coupling is not None else (None, None)


async def _remember(ctx: SyncContext, mapping: str, bc_id: str, code: Any) -> None:
    if isinstance(code, str) and code:
        async with ctx.db.session() as session:
            await couplings.remember_key(session, mapping, bc_id, code)


async def resolve(ctx: SyncContext, mapping: str, side: str, record_id: str) -> str | None:
    """Coupled id, synchronizing the record first if needed (None: it does not take part)."""
    return await coupled_id(ctx, mapping, side, record_id) or await ctx.sync_dependency(mapping, side, record_id)


async def _first_bc(ctx: SyncContext, entity_set: str, filter_: str) -> dict[str, Any] | None:
    async for record in ctx.bc.list(entity_set, filter=filter_, page_size=2):
        return record
    return None


async def base_currency_id(ctx: SyncContext) -> str | None:
    """The Dataverse currency that stands for BC's local currency (blank currency code)."""
    key = "base_currency"
    if key not in ctx.cache:
        found = None
        filter_ = f"isocurrencycode eq {odata_text(ctx.local_currency)}"
        async for row in ctx.dv.list("transactioncurrencies", filter=filter_, select=["transactioncurrencyid"],
                                     page_size=2):
            found = str(row["transactioncurrencyid"])
        ctx.cache[key] = found
    return ctx.cache[key]


async def _bc_by_code(ctx: SyncContext, entity_set: str, code: str, what: str, mapping: str) -> dict[str, Any]:
    """The BC record with this code, or MissingDependency saying it does not exist."""
    record = await _first_bc(ctx, entity_set, f"code eq {odata_text(code)}")
    if record is None:
        raise MissingDependency(f"{what} {code} does not exist in Business Central", mapping, "bc", code)
    return record


# --- toward Dataverse -------------------------------------------------------------------------------------------

async def currency_to_dataverse(ctx: SyncContext, code: str) -> dict[str, Any]:
    if not bc_currency(ctx, code):  # blank, or the LCY code BC shows for it
        base = await base_currency_id(ctx)
        return {"transactioncurrencyid@odata.bind": f"/transactioncurrencies({base})"} if base else {}
    dataverse_id = await by_code(ctx, "CURRENCY", code)
    if dataverse_id is None:
        currency = await _bc_by_code(ctx, "currencies", code, "currency", "CURRENCY")
        dataverse_id = await resolve(ctx, "CURRENCY", "bc", str(currency["id"]))
        if dataverse_id is None:
            raise MissingDependency(f"currency {code} is not coupled to a Dynamics 365 Sales currency", "CURRENCY",
                                    "bc", str(currency["id"]))
        await _remember(ctx, "CURRENCY", str(currency["id"]), currency.get("code"))
    return {"transactioncurrencyid@odata.bind": f"/transactioncurrencies({dataverse_id})"}


async def salesperson_to_dataverse(ctx: SyncContext, code: str) -> dict[str, Any]:
    if not code:
        return {}  # no salesperson: the account keeps its owner
    user_id = await by_code(ctx, "SALESPEOPLE", code)
    if user_id is None:
        person = await _bc_by_code(ctx, "salespeoplePurchasers", code, "salesperson", "SALESPEOPLE")
        user_id = await coupled_id(ctx, "SALESPEOPLE", "bc", str(person["id"]))
        if user_id is None:
            raise MissingDependency(f"salesperson {code} is not coupled to a Dynamics 365 Sales user", "SALESPEOPLE",
                                    "bc", str(person["id"]))
        await _remember(ctx, "SALESPEOPLE", str(person["id"]), person.get("code"))
    return {"ownerid@odata.bind": f"/systemusers({user_id})"}


async def unit_to_dataverse(ctx: SyncContext, code: str) -> dict[str, Any]:
    if not code:
        raise Skip("the record has no base unit of measure")
    schedule_id = await by_code(ctx, "UNITOFMEASURE", code)
    if schedule_id is None:
        unit = await _bc_by_code(ctx, "unitsOfMeasure", code, "unit of measure", "UNITOFMEASURE")
        schedule_id = await resolve(ctx, "UNITOFMEASURE", "bc", str(unit["id"]))
        if schedule_id is None:
            raise MissingDependency(f"unit of measure {code} is not coupled to a unit group", "UNITOFMEASURE", "bc",
                                    str(unit["id"]))
        await _remember(ctx, "UNITOFMEASURE", str(unit["id"]), unit.get("code"))
    base_unit = await base_unit_of(ctx, schedule_id)
    if base_unit is None:
        raise MissingDependency(f"unit group of {code} has no base unit", "UNITOFMEASURE", "dataverse", schedule_id)
    return {"defaultuomscheduleid@odata.bind": f"/uomschedules({schedule_id})",
            "defaultuomid@odata.bind": f"/uoms({base_unit})"}


BASE_UNIT_SECONDS = 300.0  # a unit group's base unit is made with the group and stays: remembered a while


async def base_unit_of(ctx: SyncContext, schedule_id: str) -> str | None:
    """The base unit (`isschedulebaseuom`) of a unit group. Dataverse creates it with the group and does not let
    it be deleted ("Create a unit group and add units to that group", Learn), so it is remembered for a few
    minutes rather than read for every product."""
    known: dict[str, tuple[str, float]] = ctx.cache.setdefault("base_unit", {})
    cached = known.get(schedule_id.lower())
    if cached is not None and time.monotonic() - cached[1] < BASE_UNIT_SECONDS:
        return cached[0]
    base_unit = None
    async for row in ctx.dv.list("uoms", filter=f"_uomscheduleid_value eq {schedule_id} and isschedulebaseuom eq true",
                                 select=["uomid"], page_size=2):
        base_unit = str(row["uomid"])
    if base_unit is not None:
        known[schedule_id.lower()] = (base_unit, time.monotonic())
    return base_unit


async def company_contact(ctx: SyncContext, customer_id: str) -> dict[str, Any] | None:
    """The customer's Company contact. `customers(<id>)/contactsInformation` (page 30072 "APIV2 - Contacts
    Information") lists the company contact *and* the company's person contacts: pick it by its type. (The
    top-level `contactsInformation` answers only with a relatedId and relatedType filter.)"""
    async for row in ctx.bc.list(f"customers({customer_id})/contactsInformation", page_size=100):
        if str(row.get("contactType") or "").lower() == "company":
            return row
    return None


COMPANY_CACHE_SECONDS = 300.0  # a company contact stands for the same customer for long: remembered a while


async def customer_of_company(ctx: SyncContext, company_number: str) -> str | None:
    """The id of the customer whose company contact has this number. BC keeps a customer's company contact
    named as the customer (its business relation), so the candidates are the customers of that name, each
    confirmed by its contact information. Found ones are remembered for a few minutes (3+ requests each)."""
    known: dict[str, tuple[str, float]] = ctx.cache.setdefault("customer_of_company", {})
    cached = known.get(company_number)
    if cached is not None and time.monotonic() - cached[1] < COMPANY_CACHE_SECONDS:
        return cached[0]
    customer_id = await _customer_of_company(ctx, company_number)
    if customer_id is None:
        log.warning("no customer found for a company contact (by its name, confirmed by contactsInformation)",
                    company_number=company_number)
    else:
        known[company_number] = (customer_id, time.monotonic())
    return customer_id


async def _customer_of_company(ctx: SyncContext, company_number: str) -> str | None:
    company = await _first_bc(ctx, "contacts", f"number eq {odata_text(company_number)}")
    if company is None or not company.get("displayName"):
        return None
    filter_ = f"displayName eq {odata_text(str(company['displayName']))}"
    async for customer in ctx.bc.list("customers", filter=filter_, select=["id"], page_size=5):
        contact = await company_contact(ctx, str(customer["id"]))
        if contact is not None and str(contact.get("contactNumber") or "") == company_number:
            return str(customer["id"])
    return None


async def parent_to_dataverse(ctx: SyncContext, company_number: str) -> dict[str, Any]:
    if not company_number:
        raise Skip("the contact belongs to no company")
    customer_id = await customer_of_company(ctx, company_number)
    if customer_id is None:
        raise Skip(f"the contact's company {company_number} has no customer")
    account_id = await resolve(ctx, "CUSTOMER", "bc", customer_id)
    if account_id is None:
        raise Skip(f"the contact's customer {customer_id} does not take part in CUSTOMER")
    return {"parentcustomerid@odata.bind": f"/accounts({account_id})"}


# --- toward Business Central ------------------------------------------------------------------------------------

def bc_currency(ctx: SyncContext, code: Any) -> str:
    """A BC currency code with the local currency blank: API v2.0 pages show a blank currency as the LCY code
    ("Graph Mgt - General Tools".TranslateNAVCurrencyCodeToCurrencyCode) and read that code back as blank."""
    text = str(code or "").strip().upper()
    return "" if text == ctx.local_currency.upper() else text


async def currency_to_bc(ctx: SyncContext, currency_id: str | None) -> dict[str, Any]:
    if not currency_id:
        return {}
    if currency_id.lower() == (await base_currency_id(ctx) or "").lower():
        return {"currencyCode": ""}
    bc_id, code = await code_of(ctx, "CURRENCY", currency_id)
    if bc_id is None:
        raise MissingDependency(f"Dynamics 365 Sales currency {currency_id} is not coupled to a Business Central "
                                "currency", "CURRENCY", "dataverse", currency_id)
    if code:
        return {"currencyCode": code}
    currency = await ctx.bc.get("currencies", bc_id)
    if currency:
        await _remember(ctx, "CURRENCY", bc_id, currency.get("code"))
    return {"currencyCode": currency["code"]} if currency else {}


# An owner that is a team, or a user the SALESPEOPLE filter leaves out, is remembered so for a few minutes (two
# reads each time otherwise); a coupling made meanwhile is found first, as the coupling is asked before this.
NOT_A_SALESPERSON_SECONDS = 300.0


async def salesperson_to_bc(ctx: SyncContext, user_id: str | None) -> dict[str, Any]:
    if not user_id:
        return {"salespersonCode": ""}
    bc_id, code = await code_of(ctx, "SALESPEOPLE", user_id)
    if code:
        return {"salespersonCode": code}
    outside: dict[str, float] = ctx.cache.setdefault("not_a_salesperson", {})
    if bc_id is None and time.monotonic() - outside.get(user_id.lower(), -NOT_A_SALESPERSON_SECONDS) \
            < NOT_A_SALESPERSON_SECONDS:
        return {"salespersonCode": ""}
    if bc_id is None and await ctx.dv.get("systemusers", user_id, select=["systemuserid"]) is None:
        outside[user_id.lower()] = time.monotonic()
        return {"salespersonCode": ""}  # owned by a team: no salesperson (BC keeps the customer's default)
    bc_id = bc_id or await resolve(ctx, "SALESPEOPLE", "dataverse", user_id)
    if bc_id is None:
        outside[user_id.lower()] = time.monotonic()
        return {"salespersonCode": ""}  # a user whom the SALESPEOPLE filter leaves out
    person = await ctx.bc.get("salespeoplePurchasers", bc_id)
    if person:
        await _remember(ctx, "SALESPEOPLE", bc_id, person.get("code"))
    return {"salespersonCode": person["code"]} if person else {"salespersonCode": ""}


async def parent_to_bc(ctx: SyncContext, account_id: str | None) -> dict[str, Any]:
    if not account_id:
        raise Skip("the contact has no parent account")
    customer_id = await resolve(ctx, "CUSTOMER", "dataverse", account_id)
    if customer_id is None:
        raise Skip(f"the contact's parent {account_id} does not take part in CUSTOMER")
    number = await company_number_of(ctx, customer_id)
    if number is None:
        raise MissingDependency(f"customer {customer_id} has no company contact", "CUSTOMER", "bc", customer_id)
    return {"companyNumber": number}


async def company_number_of(ctx: SyncContext, customer_id: str) -> str | None:
    """The number of the customer's company contact, remembered a while as `customer_of_company` remembers the
    other way (a request per contact change otherwise)."""
    known: dict[str, tuple[str, float]] = ctx.cache.setdefault("company_number_of", {})
    cached = known.get(customer_id.lower())
    if cached is not None and time.monotonic() - cached[1] < COMPANY_CACHE_SECONDS:
        return cached[0]
    link = await company_contact(ctx, customer_id)
    if link is None:
        return None
    number = str(link["contactNumber"])
    known[customer_id.lower()] = (number, time.monotonic())
    return number
