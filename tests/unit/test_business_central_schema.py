import pytest
from pydantic import ValidationError

from schemas.business_central import NotificationBatch, ResourceError, parse_resource
from tests.conftest import sample_text

COMPANY = "f64eba74-dacd-4854-a584-1834f68cfc3a"
RECORD = "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def test_the_sample_batch_parses_with_all_four_change_types() -> None:
    batch = NotificationBatch.model_validate_json(sample_text("bc-notifications.json"))
    assert [n.change_type for n in batch.value] == ["created", "updated", "deleted", "collection", "collection"]
    created, _, deleted, filtered, unfiltered = (n.parsed_resource for n in batch.value)
    assert (created.company_id, created.entity_set, created.record_id) == (COMPANY, "customers", RECORD)
    assert deleted.entity_set == "items" and deleted.record_id == "0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a"
    assert filtered.is_collection and filtered.filter == "lastModifiedDateTime gt 2025-11-25T21:48:59.95Z"
    assert unfiltered.is_collection and unfiltered.entity_set == "contacts" and unfiltered.filter is None


@pytest.mark.parametrize(
    "resource",
    [
        f"api/v2.0/companies({COMPANY})/customers({RECORD})",
        f"/api/v2.0/companies({COMPANY})/customers({RECORD})",
        f"https://api.businesscentral.dynamics.com/v2.0/tenant/production/api/v2.0/companies({COMPANY})/customers({RECORD})",
        f"http://127.0.0.1:8081/v2.0/t/production/api/v2.0/companies('{COMPANY}')/customers('{RECORD.upper()}')",
        # without the api/<version>/ part: the standard API
        f"companies({COMPANY})/customers({RECORD})",
        f"/companies({COMPANY})/customers(id={RECORD})",
    ],
)
def test_record_resources_relative_or_absolute(resource: str) -> None:
    parsed = parse_resource(resource)
    assert (parsed.api, parsed.company_id, parsed.entity_set, parsed.record_id) == ("v2.0", COMPANY, "customers", RECORD)


def test_custom_api_resources_keep_their_api_route() -> None:
    parsed = parse_resource(f"/api/bcsync/integration/v1.0/companies({COMPANY})/salesPrices({RECORD})")
    assert parsed.api == "bcsync/integration/v1.0" and parsed.entity_set == "salesPrices"


def test_collection_filter_is_decoded() -> None:
    parsed = parse_resource(
        f"api/v2.0/companies({COMPANY})/items?$filter=lastModifiedDateTime%20gt%202025-11-25T21:48:59Z"
    )
    assert parsed.record_id is None and parsed.filter == "lastModifiedDateTime gt 2025-11-25T21:48:59Z"


@pytest.mark.parametrize(
    "resource",
    ["", "customers", f"api/v2.0/companies({COMPANY})", "api/v2.0/companies(nope)/customers",
     f"api/v2.0/companies({COMPANY})/customers({RECORD})/salesOrderLines", "<script>alert(1)</script>"],
)
def test_other_strings_are_not_resources(resource: str) -> None:
    with pytest.raises(ResourceError):
        parse_resource(resource)


def _batch(**overrides: object) -> dict[str, object]:
    notification = {
        "subscriptionId": "s", "clientState": "c", "expirationDateTime": "2030-01-01T00:00:00Z",
        "resource": f"api/v2.0/companies({COMPANY})/customers({RECORD})", "changeType": "updated",
        "lastModifiedDateTime": "2025-11-25T21:49:12.57Z",
    }
    notification.update(overrides)
    return {"value": [notification]}


@pytest.mark.parametrize(
    "overrides",
    [
        {"changeType": "renamed"},
        {"resource": "nonsense"},
        {"changeType": "collection"},  # a collection must name an entity set
        {"changeType": "updated", "resource": f"api/v2.0/companies({COMPANY})/customers"},
        {"lastModifiedDateTime": "yesterday"},
        {"subscriptionId": ""},
    ],
)
def test_malformed_notifications_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NotificationBatch.model_validate(_batch(**overrides))


def test_a_batch_needs_its_value_list() -> None:
    with pytest.raises(ValidationError):
        NotificationBatch.model_validate_json('{"values": []}')
    with pytest.raises(ValidationError):
        NotificationBatch.model_validate_json("[]")
