"""The setup check against the live sandbox, in the readings it can play: the mappings held against BC's
`$metadata` and `webhookSupportedResources`, and Dataverse's attributes, choices and navigation names."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.mappings import BY_NAME, MAPPINGS, FieldMap, TableMapping
from service.connectors.factory import make_clients
from service.schema_check import CheckReport, check
from service.settings import Settings
from tests.sandbox_thread import start_sandbox_thread

CUSTOM_MAPPINGS = {"RESOURCE-PRODUCT", "CUSTPRCGRP-PRICE", "SALESPRC-PRODPRICE"}


async def run_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mappings: list[TableMapping] | None = None,
                    **readings: Any) -> CheckReport:
    config, stop = start_sandbox_thread(tmp_path, **readings)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", config.ca_file)
    settings = Settings(
        _env_file=None, tenant_id=config.tenant_id, client_id=config.client_id, client_secret=config.client_secret,
        authority_host=f"https://127.0.0.1:{config.entra_port}",
        bc_url=f"http://127.0.0.1:{config.bc_port}/v2.0/{{tenant}}/production", bc_company_id=config.company_id,
        dataverse_url=f"http://127.0.0.1:{config.dataverse_port}")
    bc, dv = make_clients(settings, "bcsync-schema-check-tag")  # writes nothing
    try:
        return await check(bc, dv, mappings if mappings is not None else list(MAPPINGS))
    finally:
        await bc.aclose()
        await dv.aclose()
        stop()


@pytest.fixture
async def default_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CheckReport]:
    yield await run_check(tmp_path, monkeypatch)


async def test_every_default_mapping_fits_the_sandbox(default_report: CheckReport) -> None:
    report = default_report
    assert report.json()["ok"], report.json()
    assert report.bc_routes == {"v2.0": "installed", "bcsync/integration/v1.0": "installed"}
    delivery = {name: found.bc_delivery for name, found in report.mappings.items()}
    # contacts are not in Microsoft's documented list of webhook-capable resources (the sandbox's default
    # reading): polled; salespeople need no BC changes (From CRM); every other BC side is pushed.
    assert delivery["CONTACT"] == "poll" and delivery["SALESPEOPLE"] == "none"
    assert {d for n, d in delivery.items() if n not in ("CONTACT", "SALESPEOPLE")} == {"push"}
    assert not report.warnings


async def test_contacts_are_pushed_where_bc_can_notify_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = await run_check(tmp_path, monkeypatch, webhook_contacts=True)
    assert report.mappings["CONTACT"].bc_delivery == "push" and report.json()["ok"]


async def test_without_the_extension_its_three_mappings_are_unavailable_and_say_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = await run_check(tmp_path, monkeypatch, custom_api=False)
    unavailable = report.json()["unavailable"]
    assert set(unavailable) == CUSTOM_MAPPINGS
    assert all("api/bcsync/integration/v1.0 is not installed" in reason and "deploy/bc-extension" in reason
               for reason in unavailable.values())
    assert report.bc_routes["bcsync/integration/v1.0"] == "not installed"
    # Mappings that depend on them (none of the others does) would say so; the rest run.
    assert all(f.available for n, f in report.mappings.items() if n not in CUSTOM_MAPPINGS)


async def test_a_field_the_tenant_lacks_is_named_and_only_its_mapping_stops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = await run_check(tmp_path, monkeypatch, missing_fields=("customers.website",))
    assert set(report.json()["unavailable"]) == {"CUSTOMER"}
    [problem] = report.mappings["CUSTOMER"].problems
    assert "customers has no field website (mapped to websiteurl)" in problem
    assert "PATCH /admin/mappings/CUSTOMER" in problem and '"enabled": false' in problem
    assert any("depends on CUSTOMER" in w for w in report.mappings["CONTACT"].warnings)


@pytest.mark.parametrize("nav_style", ["lower", "pascal"])
async def test_lookups_resolve_in_either_spelling_of_navigation_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nav_style: str) -> None:
    report = await run_check(tmp_path, monkeypatch, nav_style=nav_style)
    assert report.json()["ok"], report.json()["unavailable"]


async def test_wrong_configurations_are_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    customer = BY_NAME["CUSTOMER"]
    broken = [
        # a read-only BC field written From CRM
        # ... and a filter comparing an option with a value BC does not have (it would exclude everything)
        dataclasses.replace(customer, fields=(*customer.fields,
                                              FieldMap("balanceDue", "creditlimit", BOTH_WAYS, "money")),
                            bc_filter="blocked eq 'Never'"),
        # a choice value Sales does not have, a column it does not have, a lookup with no navigation property
        dataclasses.replace(BY_NAME["CURRENCY"], dataverse_template=(("exchangerate", 1.0), ("nosuchcolumn", 1))),
        dataclasses.replace(BY_NAME["ITEM-PRODUCT"], extra_binds=(("product", "nosuchlookupid", "account"),)),
        dataclasses.replace(BY_NAME["RESOURCE-PRODUCT"], dataverse_template=(("producttypecode", 99),)),
        dataclasses.replace(BY_NAME["CONTACT"], bc_template=(("type", "Robot"),)),
    ]
    report = await run_check(tmp_path, monkeypatch, broken)
    problems = {name: " | ".join(found.problems) for name, found in report.mappings.items()}
    assert "customers.balanceDue is read-only" in problems["CUSTOMER"]
    assert "customers.blocked has no option 'Never'" in problems["CUSTOMER"]
    assert "transactioncurrency has no column nosuchcolumn" in problems["CURRENCY"]
    assert "product.nosuchlookupid has no navigation property" in problems["ITEM-PRODUCT"]
    assert "product.producttypecode has no choice value 99" in problems["RESOURCE-PRODUCT"]
    assert "contacts.type has no option 'Robot'" in problems["CONTACT"]


BOTH_WAYS = BY_NAME["CUSTOMER"].fields[0].direction
