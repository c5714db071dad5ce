"""Property-based fuzz of the webhook parsers and doors (hypothesis, derandomized).

Arbitrary bytes, arbitrary JSON and mutations of the real sample payloads must either parse or fail with a
clean validation error (the Dataverse door: 400, or 401 for a wrong secret) — never another exception. The
Business Central door answers 202 to anything (what it cannot use is dropped and covered by a catch-up) or
401 for a clientState not ours, never 400 or 413 (BC would delete its subscriptions), and never 503, which is
for "cannot store right now" only (the fake store here always works).
Well-formed input built from its parts must parse back to those parts.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.business_central import NotificationBatch, ResourceError, parse_resource
from schemas.dataverse import RemoteExecutionContext
from schemas.events import ChangeEvent
from schemas.mappings import mappings_for
from service.intake import business_central_event, dataverse_event, is_integration_echo
from tests.conftest import sample
from tests.harness import CLIENT_STATE, INTEGRATION_USER, WEBHOOK_KEY
from tests.security.fake_intake import FakeIntake, fake_intake
from tests.security.inprocess import client, inprocess_app

FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_MORE = settings(FUZZ, max_examples=500)  # the pure parsers are fast: search longer
DV_SAMPLES = [sample(name) for name in (
    "dataverse-account-create.json", "dataverse-account-update.json", "dataverse-account-update-trimmed.json",
    "dataverse-account-update-by-integration.json", "dataverse-contact-delete.json",
    "dataverse-salesorder-submitted.json")]
BC_SAMPLE = sample("bc-notifications.json")
ENTITY = "http://schemas.microsoft.com/xrm/2011/Contracts"

# Values that sit on the edges of what the parsers handle.
EDGES: list[Any] = [
    None, "", " ", 0, -1, 1.5, 2**63, -(2**63), 1e308, "NaN", [], {}, "garbage", "\x00", "<script>",
    "/Date(0)/", "/Date(999999999999999)/", "/Date(-999999999999999)/", "/Date(1764107124000+0100)/",
    "2025-11-25T21:49:12.57Z", "2025-13-45T99:99:99Z", "0001-01-01T00:00:00", "9999-12-31T23:59:59Z",
    "00000000-0000-0000-0000-000000000000", "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    {"__type": f"EntityReference:{ENTITY}", "Id": "not-a-guid", "LogicalName": 5},
    {"__type": f"EntityReference:{ENTITY}", "Id": "8a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "LogicalName": "account"},
    {"__type": f"Money:{ENTITY}", "Value": "Infinity"}, {"__type": f"Money:{ENTITY}", "Value": "1e999999"},
    {"__type": f"OptionSetValue:{ENTITY}", "Value": 1.5}, {"__type": f"OptionSetValueCollection:{ENTITY}"},
    {"__type": f"Entity:{ENTITY}", "LogicalName": "account", "Attributes": None},
    {"__type": f"Entity:{ENTITY}", "LogicalName": "account", "Attributes": [{"key": "modifiedon", "value": "x"}]},
    {"__type": 7}, {"key": "modifiedon", "value": "not a date"}, {"key": "modifiedon", "value": 1e300},
    "api/v2.0/companies(f64eba74-dacd-4854-a584-1834f68cfc3a)/customers", "collection", "created",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.sampled_from(EDGES),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)

# What a mutation puts in place of a value: edge values and strings often, any JSON otherwise. Copied: a
# later mutation of the same document must not change the shared EDGES.
REPLACEMENTS = st.one_of(st.sampled_from(EDGES), st.text(max_size=20), JSON_VALUES).map(copy.deepcopy)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) of a JSON document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield node, key
        yield from _slots(value)


@st.composite
def mutations(draw: st.DrawFn, bases: list[Any]) -> Any:
    """A real payload with a few values replaced, removed or wrapped."""
    document = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        slots = list(_slots(document))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "replace", "delete", "wrap"]))
        if action == "delete":
            del container[key]
        elif action == "wrap":
            container[key] = [container[key]]
        else:
            container[key] = draw(REPLACEMENTS)
    return document


@st.composite
def attribute_mutations(draw: st.DrawFn, bases: list[Any]) -> Any:
    """A real payload with the values of some attribute lists' entries (`{"key", "value"}`) replaced."""
    document = copy.deepcopy(draw(st.sampled_from(bases)))
    pairs = [c[k] for c, k in _slots(document) if isinstance(c[k], dict) and set(c[k]) >= {"key", "value"}]
    for pair in draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=3)) if pairs else []:
        pair["value"] = draw(REPLACEMENTS)
    return document


def _encoded(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return documents.map(lambda d: json.dumps(d).encode())


DATAVERSE_BODIES = st.one_of(st.binary(max_size=300), _encoded(JSON_VALUES), _encoded(mutations(DV_SAMPLES)),
                             _encoded(attribute_mutations(DV_SAMPLES)))
BC_BODIES = st.one_of(st.binary(max_size=300), _encoded(JSON_VALUES), _encoded(mutations([BC_SAMPLE])),
                      _encoded(mutations(BC_SAMPLE["value"]).map(lambda n: {"value": [n]})))


# ---- the parsers, and what the doors do with a parsed payload ------------------------------------------------


def _dataverse_context(body: bytes) -> RemoteExecutionContext | None:
    try:
        return RemoteExecutionContext.model_validate_json(body)
    except ValidationError:
        return None


@FUZZ_MORE
@given(body=DATAVERSE_BODIES, trimmed=st.booleans())
def test_a_dataverse_payload_parses_into_an_event_or_is_refused_cleanly(body: bytes, trimmed: bool) -> None:
    context = _dataverse_context(body)
    if context is None:
        return
    is_integration_echo(context, INTEGRATION_USER, "bcsync")
    try:  # the door answers 400 for a ValidationError here; anything else would be a 500
        event = dataverse_event(context, trimmed=trimmed, correlation_id=None)
    except ValidationError:
        return
    assert event.record_id == str(context.primary_entity_id)
    ChangeEvent.model_validate_json(event.model_dump_json())  # it can travel on the broker


@FUZZ_MORE
@given(body=BC_BODIES)
def test_a_business_central_batch_parses_into_events_or_is_refused_cleanly(body: bytes) -> None:
    try:
        batch = NotificationBatch.model_validate_json(body)
    except ValidationError:
        return
    for notification in batch.value:  # the door answers 503 for any exception here: there must be none
        event = business_central_event(notification, correlation_id="c")
        assert event.company_id == notification.parsed_resource.company_id
        ChangeEvent.model_validate_json(event.model_dump_json())


@FUZZ
@given(resource=st.one_of(st.text(max_size=200), st.text(alphabet="api/v2.0companies()'-$?=%0123456789abcdef",
                                                           max_size=120)))
def test_any_resource_string_parses_or_raises_resource_error(resource: str) -> None:
    try:
        parsed = parse_resource(resource)
    except ResourceError:
        return
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,63}", parsed.entity_set)


GUIDS = st.uuids().map(str)
ENTITY_SETS = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,63}", fullmatch=True)
APIS = st.sampled_from(["v2.0", "v1.0", "bcsync/integration/v1.0", "microsoft/automate/v2.0"])


@st.composite
def resources(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A well-formed notification resource, in every spelling BC uses, and what it names."""
    api, company, entity_set = draw(APIS), draw(GUIDS), draw(ENTITY_SETS)
    record = draw(st.none() | GUIDS)
    quote = draw(st.sampled_from(["", "'"]))
    company_text = draw(st.sampled_from([company, company.upper()]))
    path = f"api/{api}/companies({quote}{company_text}{quote})/{entity_set}"
    if record is not None:
        path += f"({quote}{draw(st.sampled_from([record, record.upper()]))}{quote})"
    prefix = draw(st.sampled_from(["", "/", "https://api.businesscentral.dynamics.com/v2.0/t/production/"]))
    filter_ = None if record is not None else draw(st.none() | st.just("lastModifiedDateTime gt 2025-11-25T21:48:59Z"))
    query = "" if filter_ is None else "?$filter=" + filter_.replace(" ", "%20")
    return prefix + path + query, {"api": api, "company_id": company, "entity_set": entity_set,
                                   "record_id": record, "filter": filter_}


@FUZZ
@given(resource=resources())
def test_a_well_formed_resource_parses_to_what_it_names(resource: tuple[str, dict[str, Any]]) -> None:
    text, expected = resource
    parsed = parse_resource(text)
    assert parsed.model_dump() == expected
    assert parsed.is_collection == (expected["record_id"] is None)


@FUZZ
@given(resource=resources(), which=st.integers(min_value=0))
def test_a_resource_missing_one_parenthesis_is_refused(resource: tuple[str, dict[str, Any]], which: int) -> None:
    text, _ = resource
    path_end = text.find("?") if "?" in text else len(text)
    positions = [i for i, char in enumerate(text[:path_end]) if char in "()"]
    cut = positions[which % len(positions)]
    with pytest.raises(ResourceError):
        parse_resource(text[:cut] + text[cut + 1:])


@FUZZ
@given(resource=resources(), when=st.datetimes(timezones=st.just(__import__("datetime").UTC)),
       change=st.sampled_from(["created", "updated", "deleted"]))
def test_a_generated_notification_becomes_the_event_of_its_record(
        resource: tuple[str, dict[str, Any]], when: Any, change: str) -> None:
    text, expected = resource
    change = "collection" if expected["record_id"] is None else change
    body = {"value": [{"subscriptionId": "s", "clientState": CLIENT_STATE, "resource": text, "changeType": change,
                       "lastModifiedDateTime": when.isoformat()}]}
    notification = NotificationBatch.model_validate_json(json.dumps(body)).value[0]
    event = business_central_event(notification, correlation_id="c")
    assert (event.entity, event.record_id, event.company_id, event.change_type, event.api) == (
        expected["entity_set"], expected["record_id"], expected["company_id"], change, expected["api"])
    assert event.collection_filter == expected["filter"] and event.occurred_at == when
    assert event.full_reconcile == (change == "collection" and expected["filter"] is None)


@FUZZ
@given(base=st.sampled_from(DV_SAMPLES), record=st.uuids(), user=st.uuids(),
       table=st.sampled_from(["account", "contact", "salesorder", "product", "lead"]))
def test_a_generated_dataverse_context_becomes_the_event_of_its_record(
        base: dict[str, Any], record: uuid.UUID, user: uuid.UUID, table: str) -> None:
    body = base | {"PrimaryEntityId": str(record), "PrimaryEntityName": table, "UserId": str(user),
                   "InitiatingUserId": str(user)}
    context = RemoteExecutionContext.model_validate_json(json.dumps(body))
    event = dataverse_event(context, trimmed=False, correlation_id=None)
    kinds = {"Create": "created", "Update": "updated", "Delete": "deleted"}
    assert (event.entity, event.record_id, event.change_type) == (
        table, str(record), kinds.get(body["MessageName"], "updated"))
    assert event.dedupe_key == dataverse_event(context, trimmed=False, correlation_id=None).dedupe_key


# ---- the HTTP doors ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> Any:
    return inprocess_app()


@pytest.fixture(scope="module")
def intake(app: Any) -> FakeIntake:
    return fake_intake(app)


@pytest.fixture(scope="module")
def http(app: Any, intake: FakeIntake) -> Any:
    return client(app)


@FUZZ
@given(body=DATAVERSE_BODIES, trimmed=st.booleans())
def test_the_dataverse_door_answers_2xx_or_400_to_anything(http: Any, body: bytes, trimmed: bool) -> None:
    headers = {"x-bcsync-webhook-key": WEBHOOK_KEY, **({"x-ms-dynamics-msg-size-exceeded": ""} if trimmed else {})}
    response = http.post("/webhooks/dataverse", content=body, headers=headers)
    assert response.status_code in (200, 202, 400), (response.status_code, response.text)
    answer = response.json()
    assert answer["outcome"] == {200: "ignored", 202: "accepted", 400: "invalid"}[response.status_code]
    if response.status_code == 202:
        assert mappings_for("dataverse", json.loads(body)["PrimaryEntityName"])


def _entries(body: bytes) -> list[Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return []
    value = document.get("value") if isinstance(document, dict) else None
    return value if isinstance(value, list) else []


@FUZZ
@given(body=BC_BODIES, chunk=st.sampled_from([None, 1, 7, 64]))
def test_the_business_central_door_answers_202_or_401_never_400_413_or_503(
        http: Any, intake: FakeIntake, body: bytes, chunk: int | None) -> None:
    stored, catch_ups = len(intake.writer.events), len(intake.catch_ups)
    content: Any = body if chunk is None else iter([body[i:i + chunk] for i in range(0, len(body), chunk)])
    response = http.post("/webhooks/business-central", content=content)
    assert response.status_code in (202, 401), (response.status_code, response.text)
    entries = [n for n in _entries(body) if isinstance(n, dict)]
    if response.status_code == 401:  # only for a clientState that is present and not ours
        assert any(n.get("clientState") not in (None, CLIENT_STATE) for n in entries)
        assert len(intake.writer.events) == stored and len(intake.catch_ups) == catch_ups
        return
    answer = response.json()
    assert set(answer) == {"outcome", "detail", "events", "new", "duplicates", "ignored", "dropped"}
    assert len(intake.writer.events) - stored == answer["events"]
    if answer["outcome"] == "invalid":  # nothing of ours in it: it may cause nothing
        assert answer["events"] == 0 and len(intake.catch_ups) == catch_ups
    else:
        assert answer["outcome"] in ("accepted", "ignored")
        assert any(n.get("clientState") == CLIENT_STATE for n in entries)
    if answer["outcome"] == "accepted" and answer["events"] == 0:  # nothing stored: a catch-up then
        assert len(intake.catch_ups) == catch_ups + 1


@FUZZ
@given(token=st.one_of(st.text(max_size=60), st.from_regex(r"[A-Za-z0-9\-._~+/=:]{1,60}", fullmatch=True),
                       st.sampled_from(["<script>alert(1)</script>", "a b", "x\r\nSet-Cookie: a=b", "\"'><img>"])),
       method=st.sampled_from(["GET", "POST"]))
def test_the_handshake_echoes_only_well_formed_tokens_as_plain_text(http: Any, token: str, method: str) -> None:
    response = http.request(method, "/webhooks/business-central", params={"validationToken": token})
    if re.fullmatch(r"[A-Za-z0-9\-._~+/=:]{1,1024}", token):
        assert response.status_code == 200 and response.text == token
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["x-content-type-options"] == "nosniff"
    else:
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        assert not (len(token) > 2 and token in response.text)  # nothing of it reflected
