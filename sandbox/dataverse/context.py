"""RemoteExecutionContext: the JSON body Dataverse posts to a webhook for one step and one operation.

Shape and tags follow shared/samples/dataverse-*.json: Entity Targets (`__type` Entity) with key/value
`Attributes`, EntityReference/OptionSetValue/Money values tagged with `__type`, dates as `/Date(ms)/`,
images without `__type`, and a Delete Target that is an EntityReference.
"""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.dataverse import identity
from sandbox.dataverse.engine import Change
from sandbox.dataverse.schema import OPTION, TABLES, choice_labels
from sandbox.dataverse.store import Row, Store
from sandbox.dataverse.values import CONTRACTS, EntityRef, entity_reference, ms_date, now, to_context

# Columns that never travel in a context (the row version is reported as RowVersion: null in samples).
_HIDDEN = {"versionnumber", "authvalue"}
PRE, POST, BOTH = 0, 1, 2
ASYNC = 1
PRIMARY_NAME_IMAGE = "AsynchronousStepPrimaryName"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


def _ref_name(store: Store, ref: EntityRef) -> str | None:
    table = TABLES.get(ref.logical)
    row = store.get(ref.logical, ref.id) if table else None
    return row.get(table.primary_name) if row and table else None


def _attributes(logical: str, row: Row, store: Store, only: set[str] | None, names: bool) -> list[dict[str, Any]]:
    table = TABLES[logical]
    out = []
    for key, value in row.items():
        if key in _HIDDEN or (only is not None and key not in only and key != table.primary_id):
            continue
        kind = table.column_type(key) or ""
        ref_name = _ref_name(store, value) if names and isinstance(value, EntityRef) else None
        out.append({"key": key, "value": to_context(kind, value, ref_name)})
    return out


def _formatted(logical: str, row: Row) -> list[dict[str, Any]]:
    table = TABLES[logical]
    out = []
    for key, value in row.items():
        if table.column_type(key) != OPTION or not isinstance(value, int):
            continue
        labels = choice_labels(logical, key)
        if value in labels:
            out.append({"key": key, "value": labels[value]})
    return out


def _entity(logical: str, record_id: str, attributes: list[dict[str, Any]],
            formatted: list[dict[str, Any]], typed: bool) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "Attributes": attributes, "EntityState": None, "FormattedValues": formatted, "Id": record_id,
        "KeyAttributes": [], "LogicalName": logical, "RelatedEntities": [], "RowVersion": None,
    }
    return {"__type": f"Entity:{CONTRACTS}", **entity} if typed else entity


def _images(change: Change, images: list[Row], store: Store, pre: bool) -> list[dict[str, Any]]:
    source = change.pre if pre else change.post
    wanted = (PRE, BOTH) if pre else (POST, BOTH)
    out: list[dict[str, Any]] = []
    if source is None:
        return out  # no pre image on Create, no post image on Delete
    for image in images:
        if image.get("imagetype") not in wanted:
            continue
        listed = [a.strip() for a in (image.get("attributes") or "").split(",") if a.strip()]
        only = set(listed) if listed else None
        attrs = _attributes(change.logical, source, store, only, names=True)
        out.append({"key": image.get("entityalias") or ("PreImage" if pre else "PostImage"),
                    "value": _entity(change.logical, change.record_id, attrs, [], typed=False)})
    return out


def _primary_name_image(change: Change) -> list[dict[str, Any]]:
    """Dataverse's own image on asynchronous steps: the primary name (when set) and the id, no `__type`
    ("Use WebHooks to create external handlers for server events", asynchronous sample; the Contact Center
    sample shows only the id when the name is empty). Post image on Create/Update, pre image on Delete
    (community test suites of webhook payloads)."""
    source = change.pre if change.message == "Delete" else change.post
    if source is None:
        return []
    table = TABLES[change.logical]
    attrs = [{"key": table.primary_name, "value": source[table.primary_name]}] \
        if source.get(table.primary_name) is not None and table.primary_name in table.columns else []
    attrs.append({"key": table.primary_id, "value": change.record_id})
    return [{"key": PRIMARY_NAME_IMAGE, "value": _entity(change.logical, change.record_id, attrs, [], typed=False)}]


def build(change: Change, step: Row, images: list[Row], store: Store, *, primary_name_image: bool = True,
          zero_operation_id: bool = False) -> dict[str, Any]:
    if change.message == "Delete":
        target: dict[str, Any] = entity_reference(EntityRef(change.logical, change.record_id))
    else:
        assert change.target is not None
        target = _entity(change.logical, change.record_id,
                         _attributes(change.logical, change.target, store, None, names=False),
                         _formatted(change.logical, change.target), typed=True)
    shared: list[dict[str, Any]] = [{"key": "IsAutoTransact", "value": True},
                                    {"key": "AcceptLang", "value": "en-US"}]
    if change.tag is not None:
        shared.append({"key": "tag", "value": change.tag})
    output = [{"key": "id", "value": change.record_id}] if change.message == "Create" else []
    caller = change.caller
    post = _images(change, images, store, pre=False)
    pre = _images(change, images, store, pre=True)
    if primary_name_image and step.get("mode", 1) == ASYNC:
        if change.message == "Delete":
            pre = _primary_name_image(change) + pre
        else:
            post = _primary_name_image(change) + post
    return {
        "BusinessUnitId": identity.BUSINESS_UNIT_ID,
        "CorrelationId": change.correlation_id,
        "Depth": change.depth,
        "InitiatingUserAzureActiveDirectoryObjectId": caller.aad_object_id,
        "InitiatingUserId": caller.user_id,
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": change.message,
        "Mode": step.get("mode", 1),
        "OperationCreatedOn": ms_date(now()),
        # OperationId names the step's system job (non-zero in use-webhooks.md's sample); the zero reading
        # (`zero_operation_id`) leaves RequestId to identify the delivery. Built once per delivery, so
        # Dataverse's one retry carries the same values.
        "OperationId": ZERO_GUID if zero_operation_id else str(uuid.uuid4()),
        "OrganizationId": identity.ORGANIZATION_ID,
        "OrganizationName": identity.ORGANIZATION_NAME,
        "OutputParameters": output,
        "OwningExtension": {"Id": step["sdkmessageprocessingstepid"], "KeyAttributes": [],
                            "LogicalName": "sdkmessageprocessingstep", "Name": step.get("name"),
                            "RowVersion": None},
        "ParentContext": None,
        "PostEntityImages": post,
        "PreEntityImages": pre,
        "PrimaryEntityId": change.record_id,
        "PrimaryEntityName": change.logical,
        "RequestId": change.request_id,
        "SecondaryEntityName": "none",
        "SharedVariables": shared,
        "Stage": step.get("stage", 40),
        "UserAzureActiveDirectoryObjectId": caller.aad_object_id,
        "UserId": caller.user_id,
    }


def trim(body: dict[str, Any]) -> dict[str, Any]:
    """What Dataverse sends when the context exceeds 256 KB: no parent context, inputs or images."""
    return {**body, "ParentContext": None, "InputParameters": [], "PreEntityImages": [], "PostEntityImages": []}
