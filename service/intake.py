"""Turn verified webhook payloads into ChangeEvents (pure functions: no I/O, easy to test)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from schemas.business_central import Notification
from schemas.dataverse import Entity, EntityReference, Money, OptionSetValue, RemoteExecutionContext
from schemas.events import ChangeEvent, ChangeKind

_DATAVERSE_KINDS: dict[str, ChangeKind] = {"Create": "created", "Update": "updated", "Delete": "deleted"}


_AS_IS = frozenset({str, int, float, bool, type(None)})  # most values of a snapshot: nothing to convert


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a Dataverse value, for the event's snapshot."""
    if type(value) in _AS_IS:
        return value
    if isinstance(value, EntityReference):
        return {"id": str(value.id), "logical_name": value.logical_name, "name": value.name}
    if isinstance(value, OptionSetValue):
        return value.value
    if isinstance(value, Money):
        return float(value.value)
    if isinstance(value, Entity):
        return {k: _plain(v) for k, v in value.as_dict().items()}
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _moment(value: Any) -> datetime | None:
    """`modifiedon` as a payload carries it (a `/Date(ms)/`, already typed, or ISO text); None when it is
    anything else, and the event falls back to the operation's time. Aware (UTC) either way."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_integration_echo(context: RemoteExecutionContext, user_id: str | None, tag: str | None) -> bool:
    """A change the integration made itself: by its own user, or carrying its tag (the installation's random
    one, service/store/installation.py: a tag anyone could guess would let a user's change pass for ours)."""
    if user_id is not None:
        own = user_id.lower()
        if str(context.user_id).lower() == own or str(context.initiating_user_id or "").lower() == own:
            return True
    return bool(tag) and context.shared_variable("tag") == tag


def dataverse_event(context: RemoteExecutionContext, *, trimmed: bool, correlation_id: str | None) -> ChangeEvent:
    # Trimmed payloads (over 256 KB) lose InputParameters and images: only the identity is left.
    trimmed = trimmed or (context.message_name in ("Create", "Update") and context.target is None)
    snapshot = None if trimmed else context.snapshot()
    occurred = _moment(snapshot.get("modifiedon")) if snapshot else None
    # OperationId names the system job: Dataverse's own retry of the delivery carries the same one.
    identity = context.operation_id or context.request_id
    dedupe = (
        f"dv:{identity}:{context.primary_entity_id}" if identity
        else "dv:" + hashlib.sha256(context.model_dump_json().encode()).hexdigest()
    )
    return ChangeEvent(
        source="dataverse",
        entity=context.primary_entity_name,
        record_id=str(context.primary_entity_id),
        change_type=_DATAVERSE_KINDS.get(context.message_name, "updated"),
        occurred_at=occurred or context.operation_created_on or datetime.now(UTC),
        dedupe_key=dedupe,
        correlation_id=correlation_id or str(context.correlation_id or dedupe),
        snapshot={k: _plain(v) for k, v in snapshot.items()} if snapshot else None,
        changed_attributes=None if trimmed else (context.changed_attributes or None),
        read_back=trimmed,
        message_name=context.message_name,
    )


def business_central_event(notification: Notification, *, correlation_id: str) -> ChangeEvent:
    resource = notification.parsed_resource
    # BC notifications have no id: the same delivery repeated carries the same four fields.
    fingerprint = "|".join((
        notification.subscription_id, notification.resource, notification.change_type,
        notification.last_modified_date_time.isoformat(),
    ))
    return ChangeEvent(
        source="business_central",
        entity=resource.entity_set,
        record_id=resource.record_id,
        change_type=notification.change_type,
        occurred_at=notification.last_modified_date_time,
        dedupe_key="bc:" + hashlib.sha256(fingerprint.encode()).hexdigest(),
        correlation_id=correlation_id,
        company_id=resource.company_id,
        api=resource.api,
        collection_filter=resource.filter,
        full_reconcile=notification.change_type == "collection" and resource.filter is None,
    )
