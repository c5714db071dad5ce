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
from sandbox.dataverse.schema import CUSTOMER_TYPE_LABELS, OPTION, STATE_LABELS, STATUS_LABELS, TABLES
from sandbox.dataverse.store import Row, Store
from sandbox.dataverse.values import CONTRACTS, EntityRef, entity_reference, ms_date, now, to_context

# Columns that never travel in a context (the row version is reported as RowVersion: null in samples).
_HIDDEN = {"versionnumber", "authvalue"}
PRE, POST, BOTH = 0, 1, 2


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
        labels: dict[int, str] = {}
        if key == "statecode":
            labels = STATE_LABELS.get(logical, {0: "Active", 1: "Inactive"})
        elif key == "statuscode":
            labels = STATUS_LABELS.get(logical, {1: "Active", 2: "Inactive"})
        elif key == "customertypecode":
            labels = CUSTOMER_TYPE_LABELS
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


def build(change: Change, step: Row, images: list[Row], store: Store) -> dict[str, Any]:
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
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": identity.ORGANIZATION_ID,
        "OrganizationName": identity.ORGANIZATION_NAME,
        "OutputParameters": output,
        "OwningExtension": {"Id": step["sdkmessageprocessingstepid"], "KeyAttributes": [],
                            "LogicalName": "sdkmessageprocessingstep", "Name": step.get("name"),
                            "RowVersion": None},
        "ParentContext": None,
        "PostEntityImages": _images(change, images, store, pre=False),
        "PreEntityImages": _images(change, images, store, pre=True),
        "PrimaryEntityId": change.record_id,
        "PrimaryEntityName": change.logical,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": shared,
        "Stage": step.get("stage", 40),
        "UserAzureActiveDirectoryObjectId": caller.aad_object_id,
        "UserId": caller.user_id,
    }


def trim(body: dict[str, Any]) -> dict[str, Any]:
    """What Dataverse sends when the context exceeds 256 KB: no parent context, inputs or images."""
    return {**body, "ParentContext": None, "InputParameters": [], "PreEntityImages": [], "PostEntityImages": []}
