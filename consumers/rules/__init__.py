"""The rule of each mapping the sync engine applies (mappings without one are only logged for now)."""

from __future__ import annotations

from consumers.rules.base import Rule
from consumers.rules.contact import ContactRule
from consumers.rules.context import SyncContext
from consumers.rules.fields import FieldRule
from consumers.rules.invoices import InvoiceRule
from consumers.rules.orders import OrderRule
from consumers.rules.prices import SalesPriceRule
from consumers.rules.products import ProductRule
from consumers.rules.salespeople import SalespeopleRule
from schemas.mappings import BY_NAME

RULE_CLASSES: dict[str, type[Rule]] = {
    "SALESPEOPLE": SalespeopleRule,
    "CURRENCY": FieldRule,
    "UNITOFMEASURE": FieldRule,
    "CUSTOMER": FieldRule,
    "CONTACT": ContactRule,
    "ITEM-PRODUCT": ProductRule,
    "RESOURCE-PRODUCT": ProductRule,
    "CUSTPRCGRP-PRICE": FieldRule,
    "SALESPRC-PRODPRICE": SalesPriceRule,
    "SALESORDER-ORDER": OrderRule,
    "POSTEDSALESINV-INV": InvoiceRule,
}


def build_rules(ctx: SyncContext) -> dict[str, Rule]:
    return {name: cls(BY_NAME[name], ctx) for name, cls in RULE_CLASSES.items()}
