"""The mapping page's pure parts: the per-key diff of two stored versions, the change form's body (only what
differs), and where the admin API's problems are shown."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.mapping_config import MappingChanges, describe, problems
from schemas.mappings import BY_NAME
from service.console.pages_mappings import (
    TOP,
    DiffLine,
    as_config,
    changes_from,
    config_diff,
    form_values,
    place_problems,
    place_validation,
    split_problems,
)

PAIRS = [(f.bc, f.dataverse) for f in BY_NAME["CUSTOMER"].fields]


def test_added_removed_and_changed_keys_in_key_order() -> None:
    before = {"bc_filter": "blocked eq ' '", "only_coupled": True, "reconcile_minutes": 30}
    after = {"bc_filter": "displayName ne 'x'", "reconcile_minutes": 30, "conflict_policy": "send"}
    assert config_diff(before, after) == [
        DiffLine("bc_filter", "changed", '"blocked eq \' \'"', '"displayName ne \'x\'"'),
        DiffLine("conflict_policy", "added", None, '"send"'),
        DiffLine("only_coupled", "removed", "true", None),
    ]
    assert config_diff(after, after) == []
    assert config_diff({}, {}) == []


def test_fields_by_their_pair_and_templates_by_their_keys() -> None:
    before = {"fields": [{"bc": "email", "dataverse": "emailaddress1", "enabled": False}],
              "bc_template": {"blocked": " ", "taxLiable": True}}
    after = {"fields": [{"bc": "email", "dataverse": "emailaddress1", "enabled": False, "sensitive": True},
                        {"bc": "city", "dataverse": "address1_city", "direction": "to_crm"}],
             "bc_template": {"blocked": "All"}, "depends_on": ["SALESPEOPLE"]}
    assert config_diff(before, after) == [
        DiffLine("bc_template.blocked", "changed", '" "', '"All"'),
        DiffLine("bc_template.taxLiable", "removed", "true", None),
        DiffLine("depends_on", "added", None, '["SALESPEOPLE"]'),
        DiffLine("fields[city ⇄ address1_city].direction", "added", None, '"to_crm"'),
        DiffLine("fields[email ⇄ emailaddress1].sensitive", "added", None, "true"),
    ]
    # An emptied template is a change too (not a key that vanishes).
    assert config_diff({"bc_template": {"a": 1}}, {"bc_template": {}}) == [
        DiffLine("bc_template", "added", None, "{}"), DiffLine("bc_template.a", "removed", "1", None)]
    assert config_diff({}, {"note": "é"}) == [DiffLine("note", "added", None, '"é"')]


def test_a_stored_version_is_json_text() -> None:
    assert as_config('{"bc_filter": "x"}') == {"bc_filter": "x"}
    assert as_config("") == {} and as_config(None) == {} and as_config({"a": 1}) == {"a": 1}


def current() -> dict[str, Any]:
    return form_values(describe(BY_NAME["CUSTOMER"], {}))


def test_the_form_sends_only_what_differs() -> None:
    now = current()
    assert changes_from(now, now, PAIRS) == ({}, {})
    entered = {**now, "bc_filter": "", "only_coupled": True, "depends_on": ["CURRENCY", "SALESPEOPLE"],
               "bc_template": '{"blocked": "All"}', "fields": [dict(f) for f in now["fields"]]}
    entered["fields"][1]["sensitive"] = True
    body, found = changes_from(now, entered, PAIRS)
    assert found == {}
    assert body == {"bc_filter": "", "only_coupled": True, "bc_template": {"blocked": "All"},
                    "fields": [{"bc": "number", "dataverse": "accountnumber", "sensitive": True}]}
    assert MappingChanges.model_validate(body).bc_template == {"blocked": "All"}


def test_the_form_finds_what_it_cannot_send() -> None:
    now = {**current(), "reconcile_minutes": "30"}
    _, found = changes_from(now, {**now, "reconcile_minutes": "", "dataverse_template": "{nope"}, PAIRS)
    assert set(found) == {"reconcile_minutes", "dataverse_template"}
    assert found["dataverse_template"][0].startswith("not JSON: Expecting property name")
    body, _ = changes_from(now, {**now, "reconcile_minutes": "-1", "fields": [
        {**f, "direction": "sideways"} if i == 2 else f for i, f in enumerate(now["fields"])]}, PAIRS)
    with pytest.raises(ValidationError) as refused:
        MappingChanges.model_validate(body)
    placed = place_validation(refused.value, body, PAIRS)
    assert placed["reconcile_minutes"] == ["Input should be greater than or equal to 0"]
    assert placed["field-2"][0].startswith("direction: Input should be ")


def test_the_apis_problems_go_next_to_their_inputs() -> None:
    changes = MappingChanges(direction="to_crm", bc_filter="blocked eq", depends_on=["SALESORDER-ORDER", "NOPE"])
    found = [*problems("SALESORDER-ORDER", changes), "SALESORDER-ORDER has no field pair number / accountnumber"]
    assert split_problems("; ".join(found)) == found  # as the API joins them: "; " inside one stays in it
    placed = place_problems(found, PAIRS)
    assert placed == {
        "direction": ["SALESORDER-ORDER cannot synchronize to_crm; it supports: from_crm"],
        "bc_filter": ["bc_filter: incomplete comparison"],
        "depends_on": ["unknown or self dependencies: SALESORDER-ORDER, NOPE"],
        "field-1": ["SALESORDER-ORDER has no field pair number / accountnumber"],
    }
    assert place_problems(["the store is busy", "dependency cycle: A → B → A"], PAIRS) == {
        TOP: ["the store is busy"], "depends_on": ["dependency cycle: A → B → A"]}


def test_a_problem_holding_a_semicolon_stays_whole() -> None:
    detail = "bc_filter: cannot read the filter at 'a; b'; dataverse_filter: incomplete comparison"
    assert split_problems(detail) == ["bc_filter: cannot read the filter at 'a; b'",
                                      "dataverse_filter: incomplete comparison"]
    assert split_problems("one problem") == ["one problem"]
