"""The organization's write path: Create/Update/Delete with the platform's rules, row versions, audit
columns, owner defaults, and one `Change` per operation for the webhook pipeline to pick up."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.dataverse import errors, identity, rules
from sandbox.dataverse.schema import SYSTEM_COLUMNS, TABLES, Table
from sandbox.dataverse.store import Row, Store
from sandbox.dataverse.values import EntityRef, now


@dataclass
class Change:
    """One executed message, what a RemoteExecutionContext is built from."""
    message: str                      # Create | Update | Delete
    logical: str
    record_id: str
    caller: identity.Caller
    target: Row | None                # Create/Update: the Target attributes; Delete: None (EntityReference)
    pre: Row | None                   # the row before (Update/Delete)
    post: Row | None                  # the row after (Create/Update)
    tag: str | None = None
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    depth: int = 1
    # The pipeline's request: one per operation, shared by every step it triggers and kept on a retry.
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


Listener = Callable[[Change], None]


class Organization:
    def __init__(self, client_id: str) -> None:
        self.store = Store()
        self.listeners: list[Listener] = []
        self._counters: dict[str, int] = {}
        self.client_id = client_id
        self.app_user = identity.Caller(identity.app_user_id(client_id), identity.app_object_id(client_id))
        self.salesperson = identity.Caller(identity.SALESPERSON_ID, identity.SALESPERSON_AAD_ID)
        self._bootstrap()

    # --- identity -------------------------------------------------------------------------------------
    def caller_for(self, user_id: str) -> identity.Caller:
        row = self.store.get("systemuser", user_id)
        if row is None:
            raise errors.not_found("systemuser", user_id)
        return identity.Caller(user_id, row.get("azureactivedirectoryobjectid") or str(uuid.uuid4()))

    def caller_for_application(self, application_id: str) -> identity.Caller | None:
        for row in self.store.all("systemuser"):
            if row.get("applicationid") == application_id and not row.get("isdisabled"):
                return identity.Caller(row["systemuserid"], row["azureactivedirectoryobjectid"])
        return None

    # --- writes ---------------------------------------------------------------------------------------
    def create(self, logical: str, attrs: Row, caller: identity.Caller, tag: str | None = None,
               record_id: str | None = None, notify: bool = True) -> Row:
        table = TABLES[logical]
        record_id = record_id or str(uuid.uuid4())
        if self.store.get(logical, record_id) is not None:
            raise errors.DataverseError(412, errors.DUPLICATE, "A record with matching key values already exists.")
        row: Row = {table.primary_id: record_id}
        row.update({k: v for k, v in attrs.items() if k not in SYSTEM_COLUMNS and k not in table.read_only})
        self._defaults(table, row, caller)
        missing = [c for c in table.required if row.get(c) is None]
        if missing:
            raise errors.invalid(f"Attribute '{missing[0]}' cannot be NULL: it is required to create a {logical}.")
        rules.check_parent_open(table, row, self.store)
        rules.check_create(table, row, self.store)
        self._stamp(row, caller, created=True)
        rules.derive(table, row, self.store)
        self.store.put(logical, row)
        if logical == "uomschedule":
            self._create_base_unit(row, caller)
        self._after_write(table, row, caller)
        if notify:
            self._emit(Change("Create", logical, record_id, caller, copy.copy(row), None, copy.copy(row), tag))
        return row

    def update(self, logical: str, record_id: str, attrs: Row, caller: identity.Caller,
               tag: str | None = None, via_action: bool = False) -> Row:
        table = TABLES[logical]
        row = self.store.get(logical, record_id)
        if row is None:
            raise errors.not_found(logical, record_id)
        changes = {k: v for k, v in attrs.items()
                   if k not in SYSTEM_COLUMNS and k not in table.read_only and k != table.primary_id}
        rules.check_update(table, row, changes, self.store, via_action)
        pre = copy.copy(row)
        row.update(changes)
        self._stamp(row, caller, created=False)
        rules.derive(table, row, self.store)
        self._after_write(table, row, caller)
        target: Row = {table.primary_id: record_id, **changes}
        target.update({c: row.get(c) for c in ("modifiedon", "modifiedby", "modifiedonbehalfby")})
        self._emit(Change("Update", logical, record_id, caller, target, pre, copy.copy(row), tag))
        return row

    def delete(self, logical: str, record_id: str, caller: identity.Caller, tag: str | None = None,
               depth: int = 1) -> None:
        table = TABLES[logical]
        row = self.store.get(logical, record_id)
        if row is None:
            raise errors.not_found(logical, record_id)
        if depth == 1:
            rules.check_parent_open(table, row, self.store)
        # Parental relationships cascade: lines with their document, contacts with their parent account.
        for child_logical, column in CASCADES.get(logical, ()):
            for child in self.store.all(child_logical):
                ref = child.get(column)
                if isinstance(ref, EntityRef) and ref.id == record_id:
                    self.delete(child_logical, child[TABLES[child_logical].primary_id], caller, tag, depth + 1)
        self.store.remove(logical, record_id)
        self._after_write(table, row, caller)
        self._emit(Change("Delete", logical, record_id, caller, None, copy.copy(row), None, tag, depth=depth))

    # --- helpers --------------------------------------------------------------------------------------
    def _defaults(self, table: Table, row: Row, caller: identity.Caller) -> None:
        rules.initial_state(table, row)
        if table.user_owned:
            row.setdefault("ownerid", EntityRef("systemuser", caller.user_id))
            row["owningbusinessunit"] = EntityRef("businessunit", identity.BUSINESS_UNIT_ID)
        if table.logical in ("salesorderdetail", "invoicedetail"):
            parent_column = "salesorderid" if table.logical == "salesorderdetail" else "invoiceid"
            parent_ref = row.get(parent_column)
            parent = self.store.get(parent_ref.logical, parent_ref.id) if isinstance(parent_ref, EntityRef) else None
            if parent is not None and parent.get("transactioncurrencyid"):
                row.setdefault("transactioncurrencyid", parent["transactioncurrencyid"])
        if "transactioncurrencyid" in table.lookups and table.logical not in ("pricelevel",):
            if self.store.get("transactioncurrency", identity.BASE_CURRENCY_ID) is not None:
                row.setdefault("transactioncurrencyid",
                               EntityRef("transactioncurrency", identity.BASE_CURRENCY_ID))
            ref = row.get("transactioncurrencyid")
            currency = self.store.get("transactioncurrency", ref.id) if isinstance(ref, EntityRef) else None
            if currency is not None and "exchangerate" in table.columns:
                row["exchangerate"] = currency.get("exchangerate") or 1.0
        if table.logical == "salesorder":
            row.setdefault("ordernumber", f"ORD-{self._sequence('salesorder'):05d}-{uuid.uuid4().hex[:4].upper()}")
        if table.logical == "invoice":
            row.setdefault("invoicenumber", f"INV-{self._sequence('invoice'):05d}-{uuid.uuid4().hex[:4].upper()}")
        if table.logical == "product":
            row.setdefault("productstructure", 1)
            row.setdefault("quantitydecimal", 0)
        if table.logical == "systemuser":
            row.setdefault("businessunitid", EntityRef("businessunit", identity.BUSINESS_UNIT_ID))
            row.setdefault("isdisabled", False)
            row.setdefault("accessmode", identity.ACCESS_READ_WRITE)
            row.setdefault("islicensed", row.get("accessmode") == identity.ACCESS_READ_WRITE)
            row.setdefault("isintegrationuser", False)
            row.setdefault("azureactivedirectoryobjectid", str(uuid.uuid4()))

    def _create_base_unit(self, schedule: Row, caller: identity.Caller) -> None:
        """Creating a unit group creates its base unit, named after `baseuomname` (as Dataverse does)."""
        unit_id = identity.DEFAULT_UNIT_ID if schedule["uomscheduleid"] == identity.DEFAULT_UNIT_GROUP_ID \
            else str(uuid.uuid4())
        unit: Row = {"uomid": unit_id, "name": schedule.get("baseuomname"), "quantity": 1.0,
                     "isschedulebaseuom": True, "uomscheduleid": EntityRef("uomschedule", schedule["uomscheduleid"]),
                     "baseuom": EntityRef("uom", unit_id)}
        self._stamp(unit, caller, created=True)
        self.store.put("uom", unit)

    def _sequence(self, logical: str) -> int:
        # Autonumbers never repeat, even after deletes.
        self._counters[logical] = self._counters.get(logical, 1000) + 1
        return self._counters[logical]

    def _stamp(self, row: Row, caller: identity.Caller, created: bool) -> None:
        moment = now()
        user = EntityRef("systemuser", caller.user_id)
        if created:
            row["createdon"] = moment
            row["createdby"] = user
        row["modifiedon"] = moment
        row["modifiedby"] = user
        row["modifiedonbehalfby"] = None
        row["versionnumber"] = self.store.next_version()

    def _after_write(self, table: Table, row: Row, caller: identity.Caller) -> None:
        """Follow-up writes the platform makes itself (no webhooks for them here)."""
        parent_column = {"salesorderdetail": "salesorderid", "invoicedetail": "invoiceid"}.get(table.logical)
        ref = row.get(parent_column) if parent_column else None
        if isinstance(ref, EntityRef):
            parent = rules.recompute_totals(self.store, ref.logical, ref.id)
            if parent is not None:
                rules.derive(TABLES[ref.logical], parent, self.store)
                parent["versionnumber"] = self.store.next_version()
        if table.logical in ("salesorder", "invoice") and self.store.get(table.logical, row[table.primary_id]):
            rules.recompute_totals(self.store, table.logical, row[table.primary_id])
            rules.derive(table, row, self.store)

    def _emit(self, change: Change) -> None:
        for listener in self.listeners:
            listener(change)

    def _bootstrap(self) -> None:
        """What every organization has before anyone seeds it: its unit, users, base currency, units,
        and the SDK messages and filters webhook steps are registered against."""
        system = identity.Caller(identity.SYSTEM_USER_ID, str(uuid.uuid4()))
        self.store.put("businessunit", {"businessunitid": identity.BUSINESS_UNIT_ID, "name": "bcsync-sandbox"})
        users: list[Row] = [
            {"systemuserid": identity.SYSTEM_USER_ID, "fullname": "SYSTEM", "accessmode": 3, "islicensed": False,
             "azureactivedirectoryobjectid": system.aad_object_id},
            {"systemuserid": self.app_user.user_id, "fullname": "# bcsync", "firstname": "#",
             "lastname": "bcsync", "applicationid": self.client_id, "islicensed": False,
             "azureactivedirectoryobjectid": self.app_user.aad_object_id,
             "accessmode": identity.ACCESS_NON_INTERACTIVE, "internalemailaddress": None,
             "domainname": f"{self.client_id}@sandbox.example"},
            {"systemuserid": identity.SALESPERSON_ID, "firstname": "Alex", "lastname": "Seller",
             "internalemailaddress": "alex.seller@contoso.example", "domainname": "alex.seller@contoso.example",
             "azureactivedirectoryobjectid": identity.SALESPERSON_AAD_ID, "mobilephone": "+1 555 0100",
             "title": "Account Manager"},
        ]
        for user in users:
            user_id = user.pop("systemuserid")
            self.create("systemuser", user, system, record_id=user_id, notify=False)
        self.create("transactioncurrency", {"isocurrencycode": "USD", "currencyname": "US Dollar",
                                            "currencysymbol": "$", "exchangerate": 1.0, "currencyprecision": 2},
                    system, record_id=identity.BASE_CURRENCY_ID, notify=False)
        self.create("uomschedule", {"name": "Default Unit", "baseuomname": "Primary Unit"}, system,
                    record_id=identity.DEFAULT_UNIT_GROUP_ID, notify=False)
        for name in ("Create", "Update", "Delete"):
            message = self.create("sdkmessage", {"name": name}, system, notify=False)
            for logical in TABLES:
                self.create("sdkmessagefilter", {
                    "name": f"{name} of {logical}", "primaryobjecttypecode": logical,
                    "secondaryobjecttypecode": "none", "iscustomprocessingstepallowed": True,
                    "sdkmessageid": EntityRef("sdkmessage", message["sdkmessageid"])}, system, notify=False)


CASCADES: dict[str, tuple[tuple[str, str], ...]] = {
    # SalesOrder_OrderClose cascades deletes too (salesorder.md: CascadeConfiguration Delete: Cascade).
    "salesorder": (("salesorderdetail", "salesorderid"), ("orderclose", "salesorderid")),
    "invoice": (("invoicedetail", "invoiceid"),),
    "account": (("contact", "parentcustomerid"),),
    "serviceendpoint": (("sdkmessageprocessingstep", "eventhandler"),),
    "sdkmessageprocessingstep": (("sdkmessageprocessingstepimage", "sdkmessageprocessingstepid"),),
    "uomschedule": (("uom", "uomscheduleid"),),
}
