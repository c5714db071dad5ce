"""A mapping rule: the data of a TableMapping plus what it takes to read a side's records and apply one.

Every rule implements one `apply(run) -> Applied`, called by the engine under the record's lease. The
field-by-field flow most mappings need is `FieldRule` (consumers/rules/fields.py); documents (orders,
invoices) apply headers with lines themselves. Values are computed *toward* a side.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from consumers.rules.context import SyncContext
from schemas.mappings import DATAVERSE_SETS, Direction, FieldMap, TableMapping
from schemas.odata_filter import matches
from schemas.vocabulary import SIDES, Applied, Side

if TYPE_CHECKING:
    from consumers.rules.record_run import RecordRun
    from schemas.events import ChangeEvent

_ALLOWED = {Side.DATAVERSE: (Direction.TO_CRM, Direction.BOTH), Side.BC: (Direction.FROM_CRM, Direction.BOTH)}


# Columns that name a record for people: the history's label (first number-like, then first name-like value)
# and its search terms (all of them, plus the match keys' columns).
NUMBER_COLUMNS = ("number", "code", "accountnumber", "productnumber", "ordernumber", "invoicenumber",
                  "isocurrencycode")
NAME_COLUMNS = ("displayName", "name", "fullname", "description", "currencyname", "email", "emailaddress1",
                "internalemailaddress", "domainname")
TERM_COLUMNS = (*NUMBER_COLUMNS, *NAME_COLUMNS, "firstname", "lastname", "phoneNumber", "telephone1",
                "externalDocumentNumber")


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class Rule:
    def __init__(self, mapping: TableMapping, ctx: SyncContext) -> None:
        self.mapping = mapping
        self.ctx = ctx
        # Setup's findings (mapping_config): why the mapping is kept off, and how BC's changes reach us.
        self.unavailable: str | None = None
        self.bc_delivery: str | None = None
        self.dataverse_set = DATAVERSE_SETS[mapping.dataverse_entity]
        self.dataverse_key = f"{mapping.dataverse_entity}id"

    @property
    def name(self) -> str:
        return self.mapping.name

    # --- identity -----------------------------------------------------------------------------------------------

    def handles(self, side: str, entity: str) -> bool:
        """Whether events of this table are this rule's records (lines and the like are not)."""
        return entity == (self.mapping.bc_entity if side == "bc" else self.mapping.dataverse_entity)

    async def event_record_id(self, side: str, event: ChangeEvent) -> str | None:
        """The id of this rule's record an event concerns (a document line's event concerns its header);
        None: the event concerns no record of this rule."""
        return event.record_id

    def record_id(self, side: str, record: dict[str, Any]) -> str:
        return str(record["id"] if side == "bc" else record[self.dataverse_key]).lower()

    def modified(self, side: str, record: dict[str, Any]) -> datetime | None:
        return parse_time(record.get("lastModifiedDateTime" if side == "bc" else "modifiedon"))

    async def read(self, side: str, record_id: str) -> dict[str, Any] | None:
        if side == "bc":
            return await self.ctx.bc.get(self.mapping.bc_entity, record_id, api=self.mapping.bc_api)
        return await self.ctx.dv.get(self.dataverse_set, record_id)

    async def records(self, side: str, filter_: str | None = None) -> Any:
        """Every record of a side (streamed page by page), optionally only those matching `filter_`."""
        if side == "bc":
            return self.ctx.bc.list(self.mapping.bc_entity, api=self.mapping.bc_api, filter=filter_)
        return self.ctx.dv.list(self.dataverse_set, filter=filter_)

    def describe(self, record: dict[str, Any]) -> tuple[str | None, list[str]]:
        """A record's label for people ("10000 Adatum Corporation") and its search terms."""
        number = next((str(record[c]) for c in NUMBER_COLUMNS if record.get(c) not in (None, "")), None)
        name = next((str(record[c]) for c in NAME_COLUMNS if record.get(c) not in (None, "")), None)
        label = " ".join(part for part in (number, name) if part) or None
        keys = {column for pair in self.mapping.match_keys for column in pair}
        terms = [str(record[c]) for c in (*TERM_COLUMNS, *sorted(keys))
                 if record.get(c) not in (None, "") and not isinstance(record[c], dict | list)]
        return (label[:200] if label else None), terms

    # --- participation ------------------------------------------------------------------------------------------

    def included(self, side: str, record: dict[str, Any]) -> bool:
        return matches(self.mapping.bc_filter if side == "bc" else self.mapping.dataverse_filter, record)

    def fields_toward(self, target: str) -> list[FieldMap]:
        return [f for f in self.mapping.fields if f.direction in _ALLOWED[Side(target)]]

    def creates_toward(self, target: str) -> bool:
        """New records of the other side become new records on `target` (the mapping's direction)."""
        return self.mapping.direction in _ALLOWED[Side(target)]

    def catch_up_sides(self) -> list[str]:
        """The sides whose changed records a catch-up reads: those whose records flow to the other side."""
        return [side for side in SIDES if self.creates_toward(Side(side).other)]

    async def apply(self, run: RecordRun) -> Applied:
        """Apply one record's change to the other side, under the engine's record lease. Raises Skip (not
        applied, and why), SyncFailure/ApiError (failed: retried), RecordBusy/CoupledMeanwhile (run again)."""
        raise NotImplementedError
