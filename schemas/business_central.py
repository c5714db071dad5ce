"""Business Central webhook notifications and the resource paths they name.

A notification carries no data: only which record (or collection) changed, how, and when. `resource`
is what the subscription named plus `(<id>)`: Microsoft's example notification writes it
`api/v2.0/companies(<id>)/customers(<id>)` ("Working with webhooks in Dynamics 365 Business Central"), its
subscriptions `/api/v2.0/companies(<id>)/customers`. Read here: with or without the leading `/`, with or
without the `api/<version>/` part (then the standard API v2.0), absolute URLs, and keys with or without
quotes (`customers('<id>')`, `customers(id=<id>)`). A `collection` names the entity set, with
`?$filter=lastModifiedDateTime gt …` or with no filter at all when a delete was involved (then the whole
entity set must be reconciled).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

ChangeType = Literal["created", "updated", "deleted", "collection"]

_GUID = (r"(?:id=)?'?(?P<{name}>[0-9a-fA-F]{{8}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{4}}-"
         r"[0-9a-fA-F]{{12}})'?")
STANDARD_API = "v2.0"
_RESOURCE = re.compile(
    r"(?:^|/)(?:api/(?P<api>(?:[A-Za-z0-9_]+/[A-Za-z0-9_]+/)?v\d+\.\d+)/)?companies\("
    + _GUID.format(name="company")
    + r"\)/(?P<entity_set>[A-Za-z][A-Za-z0-9]{0,63})(?:\("
    + _GUID.format(name="record")
    + r"\))?/?$"
)


class BcResource(BaseModel):
    model_config = ConfigDict(frozen=True)

    api: str  # "v2.0", or "bcsync/integration/v1.0" for the custom API
    company_id: str
    entity_set: str
    record_id: str | None = None
    filter: str | None = None  # the `$filter` of a collection, decoded

    @property
    def is_collection(self) -> bool:
        return self.record_id is None


class ResourceError(ValueError):
    """A resource string that is not a Business Central API path."""


def parse_resource(resource: str) -> BcResource:
    parts = urlsplit(resource.strip())
    match = _RESOURCE.search(unquote(parts.path))
    if match is None:
        raise ResourceError(f"not a Business Central API resource: {resource[:200]!r}")
    filters = parse_qs(parts.query, keep_blank_values=True).get("$filter")
    return BcResource(
        api=match.group("api") or STANDARD_API,
        company_id=match.group("company").lower(),
        entity_set=match.group("entity_set"),
        record_id=match.group("record").lower() if match.group("record") else None,
        filter=filters[0] if filters else None,
    )


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: str = Field(alias="subscriptionId", min_length=1, max_length=128)
    client_state: str = Field(default="", alias="clientState", max_length=2048)
    expiration_date_time: datetime | None = Field(default=None, alias="expirationDateTime")
    resource: str = Field(min_length=1, max_length=4096)
    change_type: ChangeType = Field(alias="changeType")
    last_modified_date_time: datetime = Field(alias="lastModifiedDateTime")

    @model_validator(mode="after")
    def _resource_is_parseable(self) -> Notification:
        parsed = parse_resource(self.resource)
        if (self.change_type == "collection") != parsed.is_collection:
            raise ValueError("a collection names an entity set; other change types name one record")
        return self

    @property
    def parsed_resource(self) -> BcResource:
        return parse_resource(self.resource)


class NotificationBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # What the door documents (its OpenAPI schema); the door itself reads up to 20,000 and catches up the rest.
    value: list[Notification] = Field(max_length=20_000)
