"""The ChangeEvent: what travels on the broker from the webhook receivers to the mapping consumers.

It is a trigger, not data: consumers read the record's current state at the source before they write.
`snapshot` is what the webhook happened to carry (handy for logs and for choosing what to read);
`read_back` says the payload was trimmed and nothing but the record's identity can be trusted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

Source = Literal["dataverse", "business_central"]
ChangeKind = Literal["created", "updated", "deleted", "collection"]


def routing_key(source: str, entity: str) -> str:
    """Topic routing key of an entity's events: `<source>.<entity>` (entity names hold no dots)."""
    return f"{source}.{entity}"


class ChangeEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(default_factory=lambda: uuid4().hex)
    source: Source
    entity: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    record_id: str | None = None  # None for a collection
    change_type: ChangeKind
    occurred_at: datetime  # the change at the source (its modified time, or when it was reported)
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    dedupe_key: str = Field(min_length=1, max_length=200)
    correlation_id: str = Field(min_length=1, max_length=128)
    snapshot: dict[str, Any] | None = None
    changed_attributes: list[str] | None = None  # Dataverse Update: the columns in Target
    read_back: bool = False  # the webhook payload was trimmed: read the record back
    message_name: str | None = None  # the Dataverse message (Create, Update, SetState, …)
    company_id: str | None = None  # Business Central company
    api: str | None = None  # Business Central API route: "v2.0" or the custom API's
    collection_filter: str | None = None  # `$filter` of a BC collection notification
    full_reconcile: bool = False  # a collection with no filter: deletes may be hidden inside

    @property
    def routing_key(self) -> str:
        return routing_key(self.source, self.entity)
