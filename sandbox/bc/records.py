"""Create/update/delete with BC's validation: field checks, ETags and If-Match, related tables.

This is the one place that decides what a write does to the data, for the API, `$batch` and the
`/_sandbox/` human user alike (the human user just skips If-Match).
"""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.bc import documents
from sandbox.bc.entities import EMPTY_GUID, ENTITIES, LCY_CODE, LCY_TRANSLATED, LINES_OF, EntityDef
from sandbox.bc.enums import ENUMS
from sandbox.bc.errors import BCError, bad_request, not_found, unknown_property
from sandbox.bc.shape import Shape
from sandbox.bc.store import Row, Store

_TYPES = {bool: "Edm.Boolean", float: "Edm.Decimal", int: "Edm.Int32", str: "Edm.String"}


def missing_if_match() -> BCError:
    return BCError(
        400, "BadRequest_InvalidToken",
        "Could not validate the client concurrency token required by the service. "
        "Please provide a valid token in the client request.",
    )


def entity_changed() -> BCError:
    return BCError(409, "Request_EntityChanged", "Another user has already changed the record.")


def related_missing(entity: str, field: str, value: str, related: str) -> BCError:
    return BCError(
        400, "Internal_RecordNotFound",
        f"The field {field} of table {entity} contains a value ({value}) that cannot be found in "
        f"the related table ({related}).",
    )


class Records:
    def __init__(self, store: Store, shape: Shape) -> None:
        self.store = store
        self.shape = shape

    # ---- reads --------------------------------------------------------------------------------
    def get(self, name: str, row_id: str) -> Row:
        row = self.store.table(name).rows.get(row_id.lower())
        if row is None:
            raise not_found(ENTITIES[name].caption, row_id)
        return row

    def by_code(self, name: str, code: str) -> Row | None:
        return self.store.table(name).find_unique(code) if code else None

    # ---- validation ---------------------------------------------------------------------------
    def clean(self, entity: EntityDef, body: dict[str, Any], creating: bool) -> dict[str, Any]:
        """Check names and types; drop read-only fields (BC ignores most of them silently).

        Enum values may come in either spelling ("_x0020_" or " "); memory keeps the AL member name."""
        out: dict[str, Any] = {}
        fields = self.shape.view(entity.name).fields  # a field this tenant lacks is unknown
        for key, value in body.items():
            if key.startswith("@odata.") or key == LINES_OF.get(entity.name):
                continue
            if key not in fields:
                raise unknown_property(entity.entity, key)
            if key in entity.readonly or (key == "number" and not creating and entity.unique == "number"):
                continue
            default = entity.fields[key]
            out[key] = _convert(key, default, value)
            if key == "currencyCode" and entity.name in LCY_TRANSLATED and str(out[key]).upper() == LCY_CODE:
                out[key] = ""  # the LCY code is the blank currency (TranslateCurrencyCodeToNAVCurrencyCode)
            enum = ENUMS.get((entity.name, key))
            if enum:
                member = enum.canonical(str(out[key]))
                if member is None:
                    raise bad_request(f"Cannot convert the literal '{out[key]}' to the expected type "
                                      f"'Microsoft.NAV.{enum.name}'.")
                out[key] = member
        return out

    # ---- writes -------------------------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any], parent_id: str | None = None) -> Row:
        entity = ENTITIES[name]
        with self.store.transaction():
            data = {**entity.fields, **self.clean(entity, body, creating=True)}
            data["id"] = str(uuid.uuid4())
            if entity.parent:
                if not parent_id:
                    parent_id = str(body.get("documentId") or "")
                header = self.get(entity.parent, parent_id)
                data["documentId"] = header.data["id"]
            self._number(entity, data)
            self._resolve(entity, data, None)
            if entity.parent:
                return documents.save_line(self, entity, data, created=True)
            row = self.store.put(name, data)
            self._after_create(entity, row, body)
            return self.get(name, row.data["id"])

    def update(self, name: str, row_id: str, body: dict[str, Any], if_match: str | None,
               require_if_match: bool = True) -> Row:
        entity = ENTITIES[name]
        row = self.get(name, row_id)
        check_if_match(row.etag, if_match, require_if_match)
        with self.store.transaction():
            documents.check_editable(entity, row)
            changes = self.clean(entity, body, creating=False)
            data = {**row.data, **changes}
            if entity.unique and entity.unique in changes:
                self._check_unique(entity, data, row.data["id"])
            self._resolve(entity, data, row.data)
            if all(row.data.get(k) == v for k, v in data.items()):
                return row  # nothing changed: no new ETag, no notification (as BC drops them)
            if entity.parent:
                return documents.save_line(self, entity, data, created=False)
            new = self.store.put(name, data)
            self._after_update(entity, row.data, new)
            return new

    def delete(self, name: str, row_id: str, if_match: str | None, require_if_match: bool = True) -> None:
        entity = ENTITIES[name]
        row = self.get(name, row_id)
        check_if_match(row.etag, if_match, require_if_match)
        with self.store.transaction():
            documents.check_editable(entity, row)
            documents.check_deletable(self, entity, row)
            if entity.parent:
                documents.delete_line(self, entity, row)
                return
            if entity.name in LINES_OF:
                documents.delete_lines(self, entity.name, row.data["id"])
            self.store.remove(name, row.data["id"])
            if entity.name == "customers":
                self._unlink_company_contact(row.data["id"])

    # ---- helpers ------------------------------------------------------------------------------
    def _number(self, entity: EntityDef, data: dict[str, Any]) -> None:
        if entity.unique == "number" and not data.get("number"):
            assert entity.number_prefix
            data["number"] = self.store.next_number(entity.number_prefix)
            while self.by_code(entity.name, data["number"]):
                data["number"] = self.store.next_number(entity.number_prefix)
        if entity.unique == "code" and not data.get("code"):
            raise bad_request(f"The field Code of table {entity.caption} must have a value.",
                              "Internal_FieldMustHaveValue")
        self._check_unique(entity, data, data["id"])

    def _check_unique(self, entity: EntityDef, data: dict[str, Any], row_id: str) -> None:
        if not entity.unique:
            return
        other = self.by_code(entity.name, str(data[entity.unique]))
        if other and other.data["id"] != row_id:
            raise bad_request(
                f"The {entity.caption} already exists. Identification fields and values: "
                f"{'No.' if entity.unique == 'number' else 'Code'}='{data[entity.unique]}'",
                "Internal_EntityWithSameKeyExists",
            )

    def _code_and_id(self, entity: EntityDef, data: dict[str, Any], old: dict[str, Any] | None,
                     code_field: str, id_field: str, related: str) -> None:
        """Keep a pair like currencyCode/currencyId consistent, whichever of the two was written."""
        old = old or {}
        code, rid = str(data.get(code_field, "")), str(data.get(id_field, EMPTY_GUID))
        if rid != old.get(id_field, EMPTY_GUID) and rid != EMPTY_GUID:
            row = self.store.table(related).rows.get(rid.lower())
            if row is None:
                raise not_found(ENTITIES[related].caption, rid)
            data[code_field] = row.data["code"]
        elif code != old.get(code_field, ""):
            if not code:
                data[id_field] = EMPTY_GUID
                return
            found = self.by_code(related, code)
            if found is None:
                raise related_missing(entity.caption, code_field, code, ENTITIES[related].caption)
            data[code_field], data[id_field] = found.data["code"], found.data["id"]

    def _resolve(self, entity: EntityDef, data: dict[str, Any], old: dict[str, Any] | None) -> None:
        if "currencyCode" in data and "currencyId" in data:
            self._code_and_id(entity, data, old, "currencyCode", "currencyId", "currencies")
        if entity.name == "customers":
            code = data["salespersonCode"]
            if code and code != (old or {}).get("salespersonCode") and not self.by_code(
                    "salespeoplePurchasers", code):
                raise related_missing(entity.caption, "salespersonCode", code, "Salesperson/Purchaser")
        elif entity.name == "items":
            self._code_and_id(entity, data, old, "baseUnitOfMeasureCode", "baseUnitOfMeasureId",
                              "unitsOfMeasure")
        elif entity.name == "contacts":
            self._resolve_contact(data)
        elif entity.name in LINES_OF:
            documents.resolve_header(self, entity, data, old)
        elif entity.parent:
            documents.resolve_line(self, data)

    def _resolve_contact(self, data: dict[str, Any]) -> None:
        data["searchName"] = data["displayName"].upper()
        if data["type"] not in ("Company", "Person"):
            raise bad_request(f"'{data['type']}' is not a valid value for type (Company, Person).")
        if data["type"] == "Company":
            data["companyNumber"], data["companyName"] = data["number"], data["displayName"]
            return
        if not data["companyNumber"]:
            data["companyName"] = ""
            return
        company = self.by_code("contacts", data["companyNumber"])
        if company is None or company.data["type"] != "Company":
            raise related_missing("Contact", "companyNumber", data["companyNumber"], "Contact")
        data["companyName"] = company.data["displayName"]

    def _after_create(self, entity: EntityDef, row: Row, body: dict[str, Any]) -> None:
        if entity.name == "customers":
            self._create_company_contact(row)
        elif entity.name in LINES_OF:
            documents.insert_lines(self, entity.name, row.data["id"], body.get(LINES_OF[entity.name]))

    def _after_update(self, entity: EntityDef, old: dict[str, Any], new: Row) -> None:
        if entity.name == "customers":
            self._sync_company_contact(new)
        elif entity.name == "contacts" and new.data["type"] == "Company":
            # Table 5050 Contact, DoModify: a company's persons are modified only when what they inherit changed
            # (`if Name <> ContactBeforeModify.Name then ... ContChanged := true`; no Modify otherwise).
            for person in self.persons_of(old["number"]):
                inherited = {"companyName": new.data["displayName"], "companyNumber": new.data["number"]}
                if any(person.data.get(k) != v for k, v in inherited.items()):
                    self.store.put("contacts", {**person.data, **inherited})

    # ---- customer ↔ company contact (BC's "Bus. Rel. Code for Customers" marketing setup) --------
    def company_contact_of(self, customer_id: str) -> Row | None:
        contact_id = self.store.contact_links.get(customer_id)
        return self.store.table("contacts").rows.get(contact_id) if contact_id else None

    def persons_of(self, company_number: str) -> list[Row]:
        return [r for r in self.store.table("contacts").group(company_number)
                if r.data["type"] == "Person" and r.data["companyNumber"] == company_number]

    def _create_company_contact(self, customer: Row) -> None:
        data = {**ENTITIES["contacts"].fields, **_contact_fields(customer.data)}
        data["id"], data["type"] = str(uuid.uuid4()), "Company"
        data["number"] = self.store.next_number("CT")
        data["contactBusinessRelation"] = "Customer"
        self._resolve_contact(data)
        self.store.put("contacts", data)
        self.store.link_contact(customer.data["id"], data["id"])

    def _sync_company_contact(self, customer: Row) -> None:
        contact = self.company_contact_of(customer.data["id"])
        if contact is None:
            return
        data = {**contact.data, **_contact_fields(customer.data)}
        if data != contact.data:
            self._resolve_contact(data)
            self.store.put("contacts", data)
            self._after_update(ENTITIES["contacts"], contact.data, self.get("contacts", data["id"]))

    def _unlink_company_contact(self, customer_id: str) -> None:
        contact = self.company_contact_of(customer_id)
        self.store.unlink_contact(customer_id)
        if contact is not None:
            self.store.put("contacts", {**contact.data, "contactBusinessRelation": "None"})

    def contacts_information(self, customer_id: str) -> list[dict[str, Any]]:
        """Table 5049 "Contact Information Buffer".LoadDataFromFilters for a customer: the contact of its
        business relation (the Company contact) and every contact whose Company No. is that contact's number
        (so the company itself and its persons), in contact number order, each with relatedId = the customer
        and relatedType Customer. If none has that Company No., the relation's contact alone."""
        company = self.company_contact_of(customer_id.lower())
        if company is None:
            return []
        number = company.data["number"]
        rows = [r for r in self.store.table("contacts").group(number) if r.data["companyNumber"] == number]
        rows = sorted(rows or [company], key=lambda r: str(r.data["number"]))
        return [{"contactId": r.data["id"], "contactNumber": r.data["number"], "contactName": r.data["displayName"],
                 "contactType": r.data["type"], "relatedId": customer_id.lower(), "relatedType": "Customer"}
                for r in rows]


def _contact_fields(customer: dict[str, Any]) -> dict[str, Any]:
    keys = ("displayName", "addressLine1", "addressLine2", "city", "state", "country", "postalCode",
            "phoneNumber", "email", "website")
    return {k: customer[k] for k in keys}


def check_if_match(etag: str, if_match: str | None, required: bool) -> None:
    if if_match is None:
        if required:
            raise missing_if_match()
        return
    tags = [t.strip() for t in if_match.split(",")]
    if "*" not in tags and etag not in tags:
        raise entity_changed()


def _convert(key: str, default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float | int):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return type(default)(value)
        if isinstance(value, str):
            try:
                return type(default)(float(value))
            except ValueError:
                pass
    elif isinstance(value, str):
        return value.lower() if key.endswith("Id") and len(value) == 36 else value
    elif value is None:
        return default
    raise bad_request(
        f"Cannot convert a primitive value to the expected type '{_TYPES[type(default)]}'. "
        f"Property: '{key}'."
    )
