from uuid import UUID

from schemas.business_central import NotificationBatch
from schemas.dataverse import RemoteExecutionContext
from service.intake import business_central_event, dataverse_event, is_integration_echo
from tests.conftest import sample, sample_text

INTEGRATION_USER = "0b7e9c2d-4f61-4a8e-9d3c-5e6f7a8b9c0d"
SALESPERSON = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"


def context(name: str) -> RemoteExecutionContext:
    return RemoteExecutionContext.model_validate_json(sample_text(name))


def test_create_becomes_a_created_event_with_a_json_snapshot() -> None:
    event = dataverse_event(context("dataverse-account-create.json"), trimmed=False, correlation_id=None)
    assert (event.source, event.entity, event.change_type) == ("dataverse", "account", "created")
    assert event.record_id == "5b0e8f7a-3c2d-4e1f-9a8b-7c6d5e4f3a2b"
    assert event.routing_key == "dataverse.account"
    assert event.correlation_id == "7d284a64-e13c-5bfd-8dea-874e15b01a8c"
    assert event.snapshot is not None
    assert event.snapshot["customertypecode"] == 3 and event.snapshot["creditlimit"] == 25000.0
    assert event.snapshot["ownerid"]["id"] == SALESPERSON
    assert event.occurred_at.timestamp() == 1764107124
    assert not event.read_back
    assert event.model_dump_json()  # serializable for the broker


def test_the_dedupe_key_is_stable_per_delivery_and_differs_between_deliveries() -> None:
    first = dataverse_event(context("dataverse-account-update.json"), trimmed=False, correlation_id=None)
    again = dataverse_event(context("dataverse-account-update.json"), trimmed=False, correlation_id="x")
    other = dataverse_event(context("dataverse-account-create.json"), trimmed=False, correlation_id=None)
    assert first.dedupe_key == again.dedupe_key != other.dedupe_key
    assert first.event_id != again.event_id


def test_the_trimmed_payload_asks_the_consumer_to_read_the_record_back() -> None:
    event = dataverse_event(context("dataverse-account-update-trimmed.json"), trimmed=True, correlation_id=None)
    assert event.read_back and event.snapshot is None and event.changed_attributes is None
    assert event.record_id == "5b0e8f7a-3c2d-4e1f-9a8b-7c6d5e4f3a2b" and event.change_type == "updated"
    # Even without the header, an Update with no Target cannot be trusted.
    assert dataverse_event(context("dataverse-account-update-trimmed.json"), trimmed=False, correlation_id=None).read_back


def test_delete_and_other_messages() -> None:
    assert dataverse_event(context("dataverse-contact-delete.json"), trimmed=False, correlation_id=None).change_type == "deleted"
    raw = sample("dataverse-salesorder-submitted.json")
    raw["MessageName"] = "SetStateDynamicEntity"
    event = dataverse_event(RemoteExecutionContext.model_validate(raw), trimmed=False, correlation_id=None)
    assert event.change_type == "updated" and event.message_name == "SetStateDynamicEntity"


def test_echoes_are_recognised_by_user_or_by_tag() -> None:
    own = context("dataverse-account-update-by-integration.json")
    assert is_integration_echo(own, INTEGRATION_USER, "bcsync")
    assert is_integration_echo(own, None, "bcsync")  # the tag alone
    assert is_integration_echo(own, INTEGRATION_USER.upper(), "other-tag")  # the user alone
    users = context("dataverse-account-update.json")
    assert not is_integration_echo(users, INTEGRATION_USER, "bcsync")
    raw = sample("dataverse-account-update.json")
    raw["InitiatingUserId"] = INTEGRATION_USER  # impersonation: the integration acting for a user
    assert is_integration_echo(RemoteExecutionContext.model_validate(raw), INTEGRATION_USER, "bcsync")
    assert UUID(INTEGRATION_USER)


def test_business_central_events() -> None:
    batch = NotificationBatch.model_validate_json(sample_text("bc-notifications.json"))
    events = [business_central_event(n, correlation_id="c") for n in batch.value]
    assert [e.change_type for e in events] == ["created", "updated", "deleted", "collection", "collection"]
    assert events[0].routing_key == "business_central.customers"
    assert events[0].dedupe_key != events[1].dedupe_key  # same record, two changes
    assert events[3].collection_filter == "lastModifiedDateTime gt 2025-11-25T21:48:59.95Z"
    assert not events[3].full_reconcile and events[4].full_reconcile
    assert events[4].record_id is None and events[4].entity == "contacts"
    repeated = business_central_event(batch.value[0], correlation_id="other")
    assert repeated.dedupe_key == events[0].dedupe_key
