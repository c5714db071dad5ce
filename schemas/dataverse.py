"""The Dataverse webhook body: the JSON `RemoteExecutionContext` (plug-in execution context).

Values in attribute lists are tagged by `__type` ("EntityReference:http://schemas.microsoft.com/…");
dates travel as `/Date(ms)/`, optionally with a `±hhmm` suffix that is informational only (the
milliseconds are already UTC). Images carry Entities without a `__type` tag.

Images are found by the alias that setup registered (`POST_IMAGE`, `PRE_IMAGE`), never by position: an
asynchronous step's payload can carry Dataverse's own `AsynchronousStepPrimaryName` image (primary name and
id only) before ours ("Use WebHooks to create external handlers for server events", its asynchronous
sample). An all-zero `OperationId` or `RequestId` is read as absent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

POST_IMAGE, PRE_IMAGE = "PostImage", "PreImage"  # the aliases registered for Update and Delete steps
_EMPTY_GUID = UUID(int=0)
_DATE = re.compile(r"^/Date\((-?\d{1,15})([+-]\d{4})?\)/$")
# How such a date is documented (OpenAPI): the wire form, not the datetime it becomes.
MS_DATE_SCHEMA = WithJsonSchema({"anyOf": [{"type": "string", "pattern": _DATE.pattern}, {"type": "null"}]})


def parse_ms_date(text: str) -> datetime | None:
    """`/Date(1764107124000)/` or `/Date(1764107124000+0100)/` → an aware UTC datetime; else None."""
    match = _DATE.match(text)
    if not match:
        return None
    return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)


class NullMeansEmpty:
    """Documents (JSON schema) that a list may also be `null` on the wire, read as empty (`_null_list`)."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [handler(schema), {"type": "null"}]}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class EntityReference(_Wire):
    id: UUID = Field(alias="Id")
    logical_name: str = Field(alias="LogicalName", max_length=128)
    name: str | None = Field(default=None, alias="Name")


class OptionSetValue(_Wire):
    value: int = Field(alias="Value")


class Money(_Wire):
    value: Decimal = Field(alias="Value")


def _value_kind(raw: Any) -> str:
    """Which shape a wire value has: its `__type` tag, a `/Date(ms)/` string, or anything else."""
    if isinstance(raw, dict):
        tag = raw.get("__type")
        kind = tag.split(":", 1)[0] if isinstance(tag, str) else ""
        return kind if kind in _TAGGED else "other"
    if isinstance(raw, str) and _DATE.match(raw):
        return "date"
    return "other"


def _option_values(raw: Any) -> Any:
    return raw.get("Values") or raw.get("value") or [] if isinstance(raw, dict) else raw


def _ms_date(raw: Any) -> Any:
    return parse_ms_date(raw) if isinstance(raw, str) else raw


# A value in an attribute list. Validated by pydantic-core with a cheap Python discriminator, rather than
# converting each value in Python: webhook parsing is on the hot path of every request.
Value = Annotated[
    Annotated["Entity", Tag("Entity")]
    | Annotated["EntityReference", Tag("EntityReference")]
    | Annotated["OptionSetValue", Tag("OptionSetValue")]
    | Annotated["Money", Tag("Money")]
    | Annotated[list["OptionSetValue"], BeforeValidator(_option_values), Tag("OptionSetValueCollection")]
    | Annotated[datetime, BeforeValidator(_ms_date), Tag("date")]
    | Annotated[Any, Tag("other")],
    Discriminator(_value_kind),
]
_TAGGED = frozenset({"Entity", "EntityReference", "OptionSetValue", "Money", "OptionSetValueCollection"})


class KeyValue(_Wire):
    key: str = Field(max_length=256)
    value: Value = None


class Entity(_Wire):
    id: UUID | None = Field(default=None, alias="Id")
    logical_name: str = Field(alias="LogicalName", max_length=128)
    attributes: list[KeyValue] = Field(default_factory=list, alias="Attributes")
    formatted_values: list[KeyValue] = Field(default_factory=list, alias="FormattedValues")

    def get(self, name: str, default: Any = None) -> Any:
        for pair in self.attributes:
            if pair.key == name:
                return pair.value
        return default

    def as_dict(self) -> dict[str, Any]:
        return {pair.key: pair.value for pair in self.attributes}


def convert_value(raw: Any) -> Any:
    """One wire value, typed as it would be inside an attribute list."""
    return KeyValue.model_validate({"key": "", "value": raw}).value


class ImageEntry(_Wire):
    key: str = Field(max_length=256)
    value: Entity


Parameters = Annotated[list[KeyValue], NullMeansEmpty()]
Images = Annotated[list[ImageEntry], NullMeansEmpty()]


class RemoteExecutionContext(_Wire):
    message_name: str = Field(alias="MessageName", min_length=1, max_length=128)
    primary_entity_name: str = Field(alias="PrimaryEntityName", min_length=1, max_length=128)
    primary_entity_id: UUID = Field(alias="PrimaryEntityId")
    user_id: UUID = Field(alias="UserId")
    initiating_user_id: UUID | None = Field(default=None, alias="InitiatingUserId")
    correlation_id: UUID | None = Field(default=None, alias="CorrelationId")
    request_id: UUID | None = Field(default=None, alias="RequestId")
    operation_id: UUID | None = Field(default=None, alias="OperationId")
    operation_created_on: Annotated[datetime | None, MS_DATE_SCHEMA] = Field(default=None, alias="OperationCreatedOn")
    organization_id: UUID | None = Field(default=None, alias="OrganizationId")
    business_unit_id: UUID | None = Field(default=None, alias="BusinessUnitId")
    depth: int = Field(default=1, alias="Depth")
    stage: int | None = Field(default=None, alias="Stage")
    mode: int | None = Field(default=None, alias="Mode")
    input_parameters: Parameters = Field(default_factory=list, alias="InputParameters")
    output_parameters: Parameters = Field(default_factory=list, alias="OutputParameters")
    shared_variables: Parameters = Field(default_factory=list, alias="SharedVariables")
    pre_entity_images: Images = Field(default_factory=list, alias="PreEntityImages")
    post_entity_images: Images = Field(default_factory=list, alias="PostEntityImages")
    parent_context: RemoteExecutionContext | None = Field(default=None, alias="ParentContext")

    @field_validator("operation_created_on", mode="before")
    @classmethod
    def _ms_date(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            date = parse_ms_date(raw)
            if date is None:
                raise ValueError("expected /Date(ms)/")
            return date
        return raw

    @field_validator("request_id", "operation_id", "correlation_id", mode="after")
    @classmethod
    def _zero_is_absent(cls, value: UUID | None) -> UUID | None:
        return None if value == _EMPTY_GUID else value

    @field_validator(
        "input_parameters", "output_parameters", "shared_variables", "pre_entity_images",
        "post_entity_images", mode="before",
    )
    @classmethod
    def _null_list(cls, raw: Any) -> Any:
        return [] if raw is None else raw

    @property
    def target(self) -> Entity | EntityReference | None:
        for pair in self.input_parameters:
            if pair.key == "Target" and isinstance(pair.value, Entity | EntityReference):
                return pair.value
        return None

    def shared_variable(self, key: str) -> Any:
        """A SharedVariables value, looked up here and then up the ParentContext chain."""
        context: RemoteExecutionContext | None = self
        while context is not None:
            for pair in context.shared_variables:
                if pair.key == key:
                    return pair.value
            context = context.parent_context
        return None

    def image(self, which: str = "post") -> Entity | None:
        """The image registered under our alias (PostImage / PreImage); None when the payload has none."""
        images, alias = (self.post_entity_images, POST_IMAGE) if which == "post" else (self.pre_entity_images,
                                                                                        PRE_IMAGE)
        return next((entry.value for entry in images if entry.key == alias), None)

    @property
    def changed_attributes(self) -> list[str]:
        target = self.target
        return [pair.key for pair in target.attributes] if isinstance(target, Entity) else []

    def snapshot(self) -> dict[str, Any] | None:
        """The row's values as far as the payload tells: an image, overlaid with the Target's columns."""
        values: dict[str, Any] = {}
        image = self.image("pre" if self.message_name == "Delete" else "post")
        if image is not None:
            values.update(image.as_dict())
        target = self.target
        if isinstance(target, Entity):
            values.update(target.as_dict())
        return values or None
