from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
from pydantic import ValidationError

from schemas.dataverse import (
    Entity,
    EntityReference,
    Money,
    OptionSetValue,
    RemoteExecutionContext,
    convert_value,
    parse_ms_date,
)
from tests.conftest import sample, sample_text

DATAVERSE_SAMPLES = [
    "dataverse-account-create.json",
    "dataverse-account-update.json",
    "dataverse-account-update-by-integration.json",
    "dataverse-account-update-trimmed.json",
    "dataverse-contact-delete.json",
    "dataverse-salesorder-submitted.json",
]


@pytest.mark.parametrize("name", DATAVERSE_SAMPLES)
def test_every_sample_parses(name: str) -> None:
    context = RemoteExecutionContext.model_validate_json(sample_text(name))
    raw = sample(name)
    assert context.message_name == raw["MessageName"]
    assert context.primary_entity_name == raw["PrimaryEntityName"]
    assert str(context.primary_entity_id) == raw["PrimaryEntityId"]
    assert str(context.user_id) == raw["UserId"]


def test_create_target_values_are_typed() -> None:
    context = RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-create.json"))
    target = context.target
    assert isinstance(target, Entity)
    assert target.logical_name == "account"
    assert target.get("name") == "Fabrikam Bikes Ltd."
    assert target.get("customertypecode") == OptionSetValue(Value=3)
    assert target.get("creditlimit") == Money(Value=Decimal("25000.0"))
    owner = target.get("ownerid")
    assert isinstance(owner, EntityReference)
    assert owner.logical_name == "systemuser" and owner.id == UUID("d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f")
    assert target.get("modifiedon") == datetime.fromtimestamp(1764107124, tz=UTC)
    assert target.get("accountnumber") is None
    assert context.operation_created_on == datetime.fromtimestamp(1764107125, tz=UTC)
    assert context.output_parameters[0].value == "5b0e8f7a-3c2d-4e1f-9a8b-7c6d5e4f3a2b"


def test_update_has_only_changed_columns_and_a_post_image() -> None:
    context = RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-update.json"))
    assert set(context.changed_attributes) == {
        "accountid", "telephone1", "address1_city", "modifiedon", "modifiedby", "modifiedonbehalfby"
    }
    image = context.image("post")
    assert image is not None and image.get("name") == "Fabrikam Bikes Ltd."
    snapshot = context.snapshot()
    assert snapshot is not None
    assert snapshot["address1_city"] == "Bath" and snapshot["name"] == "Fabrikam Bikes Ltd."


def test_delete_target_is_a_reference_and_the_pre_image_holds_the_last_values() -> None:
    context = RemoteExecutionContext.model_validate_json(sample_text("dataverse-contact-delete.json"))
    assert isinstance(context.target, EntityReference)
    snapshot = context.snapshot()
    assert snapshot is not None and snapshot["lastname"] == "Trujillo"
    parent = snapshot["parentcustomerid"]
    assert isinstance(parent, EntityReference) and parent.name == "Fabrikam Bikes Ltd."


def test_shared_variables_are_found_at_top_level_and_in_the_parent_context() -> None:
    own = RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-update-by-integration.json"))
    assert own.shared_variable("tag") == "bcsync"
    raw = sample("dataverse-account-update.json")
    raw["ParentContext"] = {**sample("dataverse-account-update.json"),
                            "SharedVariables": [{"key": "tag", "value": "bcsync"}]}
    nested = RemoteExecutionContext.model_validate(raw)
    assert nested.shared_variable("tag") == "bcsync"
    assert RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-update.json")).shared_variable(
        "tag") is None


def test_trimmed_payload_has_no_target_or_images() -> None:
    context = RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-update-trimmed.json"))
    assert context.target is None and context.image("post") is None and context.snapshot() is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/Date(1764107124000)/", datetime.fromtimestamp(1764107124, tz=UTC)),
        ("/Date(1764107124000+0100)/", datetime.fromtimestamp(1764107124, tz=UTC)),  # suffix is informational
        ("/Date(1764107124000-0530)/", datetime.fromtimestamp(1764107124, tz=UTC)),
        ("/Date(-86400000)/", datetime(1969, 12, 31, tzinfo=UTC)),
        ("/Date(abc)/", None),
        ("2025-11-25", None),
    ],
)
def test_ms_dates(text: str, expected: datetime | None) -> None:
    assert parse_ms_date(text) == expected
    assert convert_value(text) == (expected if expected else text)


def test_unknown_tagged_values_are_kept_and_multi_select_becomes_a_list() -> None:
    assert convert_value({"__type": "AliasedValue:x", "Value": 1}) == {"__type": "AliasedValue:x", "Value": 1}
    values = {"__type": "OptionSetValueCollection:x", "Values": [{"__type": "OptionSetValue:x", "Value": 2}]}
    assert convert_value(values) == [OptionSetValue(Value=2)]


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        "{}",
        '{"MessageName": "Create", "PrimaryEntityName": "account", "UserId": "x"}',
        '{"MessageName": "Create", "PrimaryEntityName": "account", "PrimaryEntityId": "not-a-guid",'
        ' "UserId": "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"}',
        '{"MessageName": "", "PrimaryEntityName": "account", "PrimaryEntityId": "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f",'
        ' "UserId": "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"}',
        "not json",
    ],
)
def test_what_is_not_a_context_is_refused(body: str) -> None:
    with pytest.raises(ValidationError):
        RemoteExecutionContext.model_validate_json(body)


def test_images_are_found_by_the_registered_alias_not_by_position() -> None:
    # An asynchronous step's payload carries Dataverse's own AsynchronousStepPrimaryName image (name and id
    # only) before ours ("Use WebHooks …", its asynchronous sample).
    context = RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-update-async-images.json"))
    assert next(entry.key for entry in context.post_entity_images) == "AsynchronousStepPrimaryName"
    image = context.image("post")
    assert image is not None and image.get("telephone1") is not None and image.get("address1_line1") is not None
    snapshot = context.snapshot()
    assert snapshot is not None and snapshot["telephone1"] == "+44 20 7946 0000" and "websiteurl" in snapshot


def test_an_image_under_another_alias_is_not_ours() -> None:
    raw = sample("dataverse-account-update.json")
    for entry in raw["PostEntityImages"]:
        entry["key"] = "SomeoneElsesImage"
    assert RemoteExecutionContext.model_validate(raw).image("post") is None


def test_an_all_zero_operation_id_is_absent_and_the_request_id_identifies_the_delivery() -> None:
    from service.intake import dataverse_event

    context = RemoteExecutionContext.model_validate_json(sample_text("dataverse-account-update-async-images.json"))
    assert context.operation_id is None and context.request_id is not None
    event = dataverse_event(context, trimmed=False, correlation_id=None)
    assert event.dedupe_key == f"dv:{context.request_id}:{context.primary_entity_id}"
    other = RemoteExecutionContext.model_validate({**sample("dataverse-account-update-async-images.json"),
                                                   "RequestId": "6a0c8d1e-2b3f-4a5b-8c7d-9e0f1a2b3c4d"})
    assert dataverse_event(other, trimmed=False, correlation_id=None).dedupe_key != event.dedupe_key
