"""A history entry as the store keeps it (service/store/history.py `entry`): ids, long values cut, sensitive
fields masked, the reason redacted, events reduced, search terms; and which fields a mapping marks sensitive."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.mapping_config import MappingChanges, describe, effective, merge
from schemas.mappings import BY_NAME, sensitive_fields
from schemas.vocabulary import Decision, FieldChange, Result, Side
from service.store import history
from service.store.models import RecordHistory

BC = "5F1E0000-0000-0000-0000-00000000000A"
DV = "8a2c0000-0000-0000-0000-00000000000b"


def build(**overrides: Any) -> RecordHistory:
    values: dict[str, Any] = {
        "mapping": "CUSTOMER", "side": Side.BC, "record_id": BC, "bc_id": None, "dataverse_id": None,
        "kind": "live", "result": Result.MODIFIED, "decision": Decision.APPLIED, "reason": None, "events": [],
        "changes": [], "sensitive": (), "correlation_id": "corr-1", "duration_ms": 42, "label": "10000 Adatum",
        "terms": ()}
    values.update(overrides)
    return history.entry(**values)


def test_the_source_id_fills_its_side_lower_case_and_the_row_is_complete() -> None:
    before = datetime.now(UTC)
    row = build(events=[{"event_id": "e1", "source": "business_central", "change_type": "updated",
                         "correlation_id": "n-1", "received_at": datetime(2026, 12, 5, 10, 0, tzinfo=UTC),
                         "occurred_at": "2026-12-05T09:59:58Z", "snapshot": {"phoneNumber": "555"}}])
    assert (row.bc_id, row.dataverse_id, row.side) == (BC.lower(), None, "bc")
    assert (row.kind, row.result, row.decision, row.correlation_id, row.duration_ms) == (
        "live", "modified", "applied", "corr-1", 42)
    assert row.at >= before and row.at.tzinfo is not None
    assert json.loads(row.events) == [{"event_id": "e1", "source": "business_central", "change_type": "updated",
                                       "correlation_id": "n-1", "received_at": "2026-12-05T10:00:00+00:00",
                                       "occurred_at": "2026-12-05T09:59:58Z"}]  # nothing else of the event
    other = build(side=Side.DATAVERSE, record_id=DV.upper(), bc_id=BC)
    assert (other.bc_id, other.dataverse_id, other.side) == (BC.lower(), DV, "dataverse")
    both = build(bc_id=BC, dataverse_id=DV.upper())
    assert (both.bc_id, both.dataverse_id) == (BC.lower(), DV)
    assert build(duration_ms=-3).duration_ms == 0


def test_long_values_are_cut_with_a_mark_and_values_stay_json() -> None:
    changes = [FieldChange(Side.DATAVERSE, "description", "x" * 30, "y" * 31),
               FieldChange(Side.DATAVERSE, "creditlimit", Decimal("1000.50"), 12.5),
               FieldChange(Side.DATAVERSE, "address", {"city": "Oslo", "n": [1]}, None),
               FieldChange(Side.DATAVERSE, "big", {"text": "z" * 100}, 10**40),
               FieldChange(Side.BC, "when", date(2026, 12, 5), datetime(2026, 12, 5, 8, 0, tzinfo=UTC)),
               FieldChange(Side.BC, "blocked", False, True),
               FieldChange(Side.BC, "weird", float("nan"), {"n": float("inf")})]
    stored = json.loads(build(changes=changes, value_chars=30).changes)
    values = {c["field"]: (c["old"], c["new"]) for c in stored}
    assert values["description"] == ("x" * 30, "y" * 29 + "…")  # 30 kept whole, 31 cut to 30 with the mark
    assert len(values["description"][1]) == 30
    assert values["creditlimit"] == ("1000.50", 12.5)
    assert values["address"] == ({"city": "Oslo", "n": [1]}, None)
    assert values["big"] == ('{"text": "' + "z" * 19 + "…", "1" + "0" * 28 + "…")
    assert values["when"] == ("2026-12-05", "2026-12-05T08:00:00+00:00")
    assert values["blocked"] == (False, True)
    assert values["weird"] == ("nan", "{'n': inf}")
    assert all(c["sensitive"] is False and c["side"] in ("bc", "dataverse") for c in stored)
    assert json.loads(build(changes=changes[:1]).changes)[0]["new"] == "y" * 31  # the default bound is 500


def test_sensitive_fields_are_recorded_as_changed_never_with_their_values() -> None:
    changes = [FieldChange(Side.DATAVERSE, "telephone1", "555-0100", "555-0199"),
               FieldChange(Side.BC, "phoneNumber", "555-0100", "555-0199"),
               FieldChange(Side.DATAVERSE, "firstname+lastname", "Ann Lee", "Ann Li"),
               FieldChange(Side.DATAVERSE, "emailaddress1", "a@example.com", "b@example.com")]
    row = build(changes=changes, sensitive=frozenset({"phoneNumber", "telephone1", "lastname"}))
    stored = json.loads(row.changes)
    assert stored[:3] == [
        {"side": "dataverse", "field": "telephone1", "old": None, "new": None, "sensitive": True},
        {"side": "bc", "field": "phoneNumber", "old": None, "new": None, "sensitive": True},
        {"side": "dataverse", "field": "firstname+lastname", "old": None, "new": None, "sensitive": True}]
    assert stored[3] == {"side": "dataverse", "field": "emailaddress1", "old": "a@example.com",
                         "new": "b@example.com", "sensitive": False}
    assert "555" not in row.changes and "Ann" not in row.changes


def test_the_reason_is_redacted_and_cut() -> None:
    row = build(reason="could not reach postgresql://u:Pw0rd@h/db?token=Tok3n " + "r" * 3000)
    assert row.reason is not None and len(row.reason) == 2000 and row.reason.endswith("…")
    assert "Pw0rd" not in row.reason and "Tok3n" not in row.reason
    assert build(reason=None).reason is None


def test_only_the_latest_events_are_kept_and_their_strings_are_bounded() -> None:
    events = [{"event_id": f"e{i}", "correlation_id": "c" * 500} for i in range(30)]
    kept = json.loads(build(events=events).events)
    assert [e["event_id"] for e in kept] == [f"e{i}" for i in range(10, 30)]
    assert all(len(e["correlation_id"]) == 200 and e["source"] is None for e in kept)


def test_terms_are_lower_case_distinct_bounded_and_include_the_label() -> None:
    row = build(label="  10000   Adatum  Corporation ", terms=["10000", "INFO@Adatum.example", "info@adatum.example",
                                                              "", "  ", "Line\nbreak", "t" * 300])
    assert row.label == "10000 Adatum Corporation"
    assert row.search == "\n".join(["10000 adatum corporation", "10000", "info@adatum.example", "line break",
                                    "t" * 199 + "…"])
    many = build(label=None, terms=[f"term-{i:04d}-" + "w" * 40 for i in range(100)])
    assert many.search is not None and len(many.search) <= 2000 and many.search.startswith("term-0000-")
    assert many.search.split("\n")[-1].endswith("w" * 40)  # whole terms only
    assert build(label=None, terms=[]).search is None
    assert build(label="L" * 300).label == "L" * 199 + "…"


def test_sensitive_fields_of_a_mapping_and_of_an_operators_change() -> None:
    customer = BY_NAME["CUSTOMER"]
    assert sensitive_fields(customer) == frozenset()
    marked = dataclasses.replace(customer, fields=tuple(
        dataclasses.replace(f, sensitive=f.bc == "phoneNumber") for f in customer.fields))
    assert sensitive_fields(marked) == {"phoneNumber", "telephone1"}
    contact = BY_NAME["CONTACT"]
    stored = merge({}, MappingChanges.model_validate(
        {"fields": [{"bc": "displayName", "dataverse": "firstname+lastname", "sensitive": True},
                    {"bc": "email", "dataverse": "emailaddress1", "enabled": False, "sensitive": True}]}))
    assert sensitive_fields(effective(contact, stored)) == {"displayName", "firstname+lastname", "firstname",
                                                            "lastname"}  # a disabled field writes nothing
    shown = {f["bc"]: f["sensitive"] for f in describe(contact, stored)["fields"]}
    assert shown["displayName"] is True and shown["email"] is True and shown["phoneNumber"] is False
    # Switched off again by a later change; the other field keeps its mark.
    again = merge(stored, MappingChanges.model_validate(
        {"fields": [{"bc": "displayName", "dataverse": "firstname+lastname", "sensitive": False}]}))
    assert sensitive_fields(effective(contact, again)) == frozenset()
    assert {f["bc"]: f["sensitive"] for f in describe(contact, again)["fields"]}["email"] is True


@pytest.mark.parametrize("value", [None, True, 0, -5, 1.5, "text", [], {}])
def test_short_values_are_kept_as_they_are(value: Any) -> None:
    assert history.value_of(value, 30) == value
