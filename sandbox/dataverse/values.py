"""Column values in memory, on the Web API wire (JSON) and in webhook payloads (RemoteExecutionContext).

In memory: str, int, float, bool, None, aware UTC datetime (whole seconds, as Dataverse keeps them) and
EntityRef for lookups. Every conversion between those and a wire format lives here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.dataverse import errors
from sandbox.dataverse.schema import BOOL, DATETIME, DECIMAL, GUID, INT, MONEY, OPTION, STRING

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"


@dataclass(frozen=True)
class EntityRef:
    logical: str
    id: str


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ms_date(value: datetime) -> str:
    """The WCF JSON date of webhook payloads: `/Date(<ms since epoch>)/`, UTC, no offset suffix."""
    return f"/Date({int(value.timestamp() * 1000)})/"


def parse_datetime(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(microsecond=0)


def metadata_id(*parts: str) -> str:
    """A stable MetadataId for a table, column, relationship or label (the same on every run)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "bcsync-sandbox:" + "|".join(parts)))


def normalize_guid(text: str) -> str:
    return str(uuid.UUID(text))


def to_web(kind: str, value: Any) -> Any:
    """A stored value as the Web API returns it."""
    if value is None:
        return None
    if kind == DATETIME:
        return iso(value)
    if isinstance(value, EntityRef):
        return value.id
    return value


def from_web(logical: str, name: str, kind: str, value: Any) -> Any:
    """A request-body value checked against the column type; wrong types fail like OData's reader does."""
    if value is None:
        return None
    try:
        if kind == STRING and isinstance(value, str):
            return value
        if kind in (INT, OPTION) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (DECIMAL, MONEY) and isinstance(value, int | float | str) and not isinstance(value, bool):
            return float(value)
        if kind == BOOL and isinstance(value, bool):
            return value
        if kind == DATETIME and isinstance(value, str):
            return parse_datetime(value)
        if kind == GUID and isinstance(value, str):
            return normalize_guid(value)
    except ValueError:
        pass
    raise errors.DataverseError(
        400, errors.BAD_PAYLOAD,
        f"Error identified in Payload provided by the user for Entity :'{logical}'  ----> InnerException : "
        f"Microsoft.OData.ODataException: Cannot convert the literal '{value}' to the expected type "
        f"for property '{name}'.",
    )


def entity_reference(ref: EntityRef, name: str | None = None) -> dict[str, Any]:
    return {"__type": f"EntityReference:{CONTRACTS}", "Id": ref.id, "KeyAttributes": [],
            "LogicalName": ref.logical, "Name": name, "RowVersion": None}


def to_context(kind: str, value: Any, ref_name: str | None = None) -> Any:
    """A stored value as a RemoteExecutionContext attribute value (the `__type` tags of the samples)."""
    if value is None:
        return None
    if isinstance(value, EntityRef):
        return entity_reference(value, ref_name)
    if kind == OPTION:
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}
    if kind == MONEY:
        return {"__type": f"Money:{CONTRACTS}", "Value": float(value)}
    if kind == DATETIME:
        return ms_date(value)
    return value
