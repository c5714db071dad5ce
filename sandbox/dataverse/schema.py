"""The tables the Dataverse stand-in knows: columns, their types and the lookups with their navigation names.

Only the columns the integration (and a salesperson editing by hand) plausibly touches are declared; an
undeclared column is rejected with 400 exactly as Dataverse rejects a column the org does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Column types. "option" is a choice (OptionSetValue in webhooks), "money" a currency column (Money).
STRING, INT, DECIMAL, MONEY, OPTION, BOOL, DATETIME, GUID, LOOKUP = (
    "string", "int", "decimal", "money", "option", "bool", "datetime", "guid", "lookup",
)

# Columns Dataverse sets itself: writing them is silently ignored, as the real service does.
SYSTEM_COLUMNS = ("createdon", "modifiedon", "createdby", "modifiedby", "modifiedonbehalfby", "versionnumber")


@dataclass(frozen=True)
class Lookup:
    targets: tuple[str, ...]
    # Navigation property per target in Microsoft's spelling (the "lower" reading; navigation.py derives
    # the "pascal" one): single-target lookups use the column name, polymorphic lookups `<column>_<target>`
    # (parentcustomerid_account, "Troubleshoot Dataverse Web API client errors"); owner is `ownerid` for
    # every target (account.md reference: owner_accounts).
    navs: dict[str, str]


@dataclass
class Table:
    logical: str
    entity_set: str
    primary_name: str
    columns: dict[str, str]
    lookups: dict[str, Lookup] = field(default_factory=dict)
    user_owned: bool = False
    has_state: bool = True
    required: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()
    id_column: str = ""  # activities are keyed by `activityid`, every other table by `<logical>id`

    def __post_init__(self) -> None:
        # Every table carries its key, the audit columns and the row version; most also state and status.
        self.columns = {self.primary_id: GUID, **self.columns, "createdon": DATETIME, "modifiedon": DATETIME,
                        "versionnumber": INT}
        if self.has_state:
            self.columns.update({"statecode": OPTION, "statuscode": OPTION})
        # Currency columns come with a computed base-currency twin (creditlimit_base).
        money = [name for name, kind in self.columns.items() if kind == MONEY]
        self.columns.update({f"{name}_base": MONEY for name in money})
        self.read_only = (*self.read_only, *(f"{name}_base" for name in money))
        # exchangerate is the currency's, copied by the platform: read-only everywhere but on the currency
        # itself (ProductPriceLevel table/entity reference, "Read-only attributes": ExchangeRate).
        if "exchangerate" in self.columns and self.logical != "transactioncurrency":
            self.read_only = (*self.read_only, "exchangerate")
        for column in ("createdby", "modifiedby", "modifiedonbehalfby"):
            self.lookups[column] = Lookup(("systemuser",), {"systemuser": column})

    @property
    def primary_id(self) -> str:
        return self.id_column or f"{self.logical}id"

    def column_type(self, name: str) -> str | None:
        if name in self.lookups:
            return LOOKUP
        return self.columns.get(name)


def _lk(column: str, *targets: str, polymorphic_suffix: bool = False) -> tuple[str, Lookup]:
    navs = {t: f"{column}_{t}" for t in targets} if polymorphic_suffix else {t: column for t in targets}
    return column, Lookup(targets, navs)


ADDRESS = {f"address1_{p}": STRING for p in ("line1", "line2", "line3", "city", "stateorprovince",
                                                  "postalcode", "country", "telephone1")}
BILL_SHIP = {f"{side}_{p}": STRING for side in ("billto", "shipto")
             for p in ("name", "line1", "line2", "city", "stateorprovince", "postalcode", "country")}
OWNER = dict([_lk("ownerid", "systemuser", "team"), _lk("owningbusinessunit", "businessunit")])
CURRENCY = dict([_lk("transactioncurrencyid", "transactioncurrency")])
CUSTOMER = dict([_lk("customerid", "account", "contact", polymorphic_suffix=True)])
DOC_AMOUNTS = {"totalamount": MONEY, "totalamountlessfreight": MONEY, "totallineitemamount": MONEY,
               "discountamount": MONEY, "discountpercentage": DECIMAL, "freightamount": MONEY,
               "totaltax": MONEY, "exchangerate": DECIMAL}
LINE_COLUMNS = {"quantity": DECIMAL, "priceperunit": MONEY, "manualdiscountamount": MONEY,
                "baseamount": MONEY, "extendedamount": MONEY, "tax": MONEY, "ispriceoverridden": BOOL,
                "isproductoverridden": BOOL, "productdescription": STRING, "lineitemnumber": INT,
                "description": STRING, "exchangerate": DECIMAL}


def _tables() -> list[Table]:
    return [
        Table("businessunit", "businessunits", "name", {"name": STRING}, has_state=False),
        Table("systemuser", "systemusers", "fullname", {
            "fullname": STRING, "firstname": STRING, "lastname": STRING, "internalemailaddress": STRING,
            "domainname": STRING, "mobilephone": STRING, "address1_telephone1": STRING, "title": STRING,
            "jobtitle": STRING, "isdisabled": BOOL, "islicensed": BOOL, "isintegrationuser": BOOL,
            "applicationid": GUID, "azureactivedirectoryobjectid": GUID, "accessmode": OPTION,
        }, dict([_lk("businessunitid", "businessunit")]), has_state=False, read_only=("fullname",)),
        Table("team", "teams", "name", {"name": STRING, "teamtype": OPTION},
              dict([_lk("businessunitid", "businessunit")]), has_state=False),
        Table("transactioncurrency", "transactioncurrencies", "currencyname", {
            "isocurrencycode": STRING, "currencyname": STRING, "currencysymbol": STRING,
            "exchangerate": DECIMAL, "currencyprecision": INT,
        }, required=("isocurrencycode", "currencyname", "currencysymbol", "exchangerate")),
        Table("account", "accounts", "name", {
            "name": STRING, "accountnumber": STRING, "telephone1": STRING, "telephone2": STRING,
            "fax": STRING, "emailaddress1": STRING, "websiteurl": STRING, "description": STRING,
            "customertypecode": OPTION, "creditlimit": MONEY, "exchangerate": DECIMAL, **ADDRESS,
        }, {**OWNER, **CURRENCY, **dict([_lk("parentaccountid", "account"), _lk("primarycontactid", "contact")])},
            user_owned=True),
        Table("contact", "contacts", "fullname", {
            "firstname": STRING, "lastname": STRING, "fullname": STRING, "emailaddress1": STRING,
            "telephone1": STRING, "mobilephone": STRING, "jobtitle": STRING, "description": STRING,
            "exchangerate": DECIMAL, **ADDRESS,
        }, {**OWNER, **CURRENCY, **dict([_lk("parentcustomerid", "account", "contact", polymorphic_suffix=True)])},
            user_owned=True, read_only=("fullname",)),
        Table("uomschedule", "uomschedules", "name", {"name": STRING, "baseuomname": STRING,
                                                       "description": STRING},
              required=("name", "baseuomname")),
        Table("uom", "uoms", "name", {"name": STRING, "quantity": DECIMAL, "isschedulebaseuom": BOOL},
              dict([_lk("uomscheduleid", "uomschedule"), _lk("baseuom", "uom")]), has_state=False,
              required=("name", "uomscheduleid", "baseuom", "quantity"), read_only=("isschedulebaseuom",)),
        Table("product", "products", "name", {
            "name": STRING, "productnumber": STRING, "description": STRING, "price": MONEY,
            "standardcost": MONEY, "currentcost": MONEY, "quantityonhand": DECIMAL, "producttypecode": OPTION,
            "productstructure": OPTION, "quantitydecimal": INT, "exchangerate": DECIMAL,
        }, dict([_lk("defaultuomscheduleid", "uomschedule"), _lk("defaultuomid", "uom"),
                 _lk("pricelevelid", "pricelevel"), _lk("transactioncurrencyid", "transactioncurrency")]),
            required=("name", "productnumber", "defaultuomscheduleid", "defaultuomid")),
        Table("pricelevel", "pricelevels", "name", {"name": STRING, "description": STRING,
                                                     "begindate": DATETIME, "enddate": DATETIME},
              dict(CURRENCY), required=("name", "transactioncurrencyid")),
        Table("productpricelevel", "productpricelevels", "productidname", {
            "amount": MONEY, "percentage": DECIMAL, "pricingmethodcode": OPTION, "quantitysellingcode": OPTION,
            "exchangerate": DECIMAL,
        }, {**CURRENCY, **dict([_lk("pricelevelid", "pricelevel"), _lk("productid", "product"),
                               _lk("uomid", "uom"), _lk("uomscheduleid", "uomschedule")])},
            has_state=False, required=("pricelevelid", "productid", "uomid")),
        Table("salesorder", "salesorders", "name", {
            "name": STRING, "ordernumber": STRING, "description": STRING, "requestdeliveryby": DATETIME,
            "datefulfilled": DATETIME, **DOC_AMOUNTS, **BILL_SHIP,
        }, {**OWNER, **CURRENCY, **CUSTOMER, **dict([_lk("pricelevelid", "pricelevel")])},
            user_owned=True, read_only=("totalamount", "totalamountlessfreight", "totallineitemamount")),
        Table("salesorderdetail", "salesorderdetails", "productdescription", dict(LINE_COLUMNS),
              {**CURRENCY, **dict([_lk("salesorderid", "salesorder"), _lk("productid", "product"),
                                   _lk("uomid", "uom")])},
              has_state=False, required=("salesorderid", "quantity"),
              read_only=("baseamount", "extendedamount")),
        Table("invoice", "invoices", "name", {
            "name": STRING, "invoicenumber": STRING, "description": STRING, "duedate": DATETIME,
            **DOC_AMOUNTS, **BILL_SHIP,
        }, {**OWNER, **CURRENCY, **CUSTOMER, **dict([_lk("salesorderid", "salesorder"),
                                                      _lk("pricelevelid", "pricelevel")])},
            user_owned=True, read_only=("totallineitemamount",)),
        Table("invoicedetail", "invoicedetails", "productdescription", dict(LINE_COLUMNS),
              {**CURRENCY, **dict([_lk("invoiceid", "invoice"), _lk("productid", "product"), _lk("uomid", "uom")])},
              has_state=False, required=("invoiceid", "quantity"), read_only=("baseamount",)),
        # The activity FulfillSalesOrder/CancelSalesOrder take (CRM 2016 "FulfillSalesOrder Action": OrderClose
        # is an orderclose EntityType); its `salesorderid` nav is the partner of SalesOrder_OrderClose (2017
        # salesorder EntityType reference). Entity set name and `activityid` key as for every activity.
        Table("orderclose", "ordercloses", "subject", {
            "subject": STRING, "description": STRING, "actualstart": DATETIME, "actualend": DATETIME,
        }, {**OWNER, **dict([_lk("salesorderid", "salesorder")])}, user_owned=True, id_column="activityid"),
        Table("serviceendpoint", "serviceendpoints", "name", {
            "name": STRING, "description": STRING, "url": STRING, "contract": OPTION, "authtype": OPTION,
            "authvalue": STRING, "connectionmode": OPTION, "messageformat": OPTION, "userclaim": OPTION,
            "namespaceaddress": STRING, "path": STRING,
        }, has_state=False, required=("name", "contract")),
        Table("sdkmessage", "sdkmessages", "name", {"name": STRING}, has_state=False),
        Table("sdkmessagefilter", "sdkmessagefilters", "name", {
            "name": STRING, "primaryobjecttypecode": STRING, "secondaryobjecttypecode": STRING,
            "iscustomprocessingstepallowed": BOOL,
        }, dict([_lk("sdkmessageid", "sdkmessage")]), has_state=False),
        Table("sdkmessageprocessingstep", "sdkmessageprocessingsteps", "name", {
            "name": STRING, "description": STRING, "stage": OPTION, "mode": OPTION, "rank": INT,
            "filteringattributes": STRING, "supporteddeployment": OPTION, "asyncautodelete": BOOL,
            "configuration": STRING,
        }, dict([_lk("sdkmessageid", "sdkmessage"), _lk("sdkmessagefilterid", "sdkmessagefilter"),
                 _lk("eventhandler", "serviceendpoint", "plugintype", polymorphic_suffix=True)]),
            required=("name", "sdkmessageid", "eventhandler", "stage", "mode")),
        Table("sdkmessageprocessingstepimage", "sdkmessageprocessingstepimages", "name", {
            "name": STRING, "entityalias": STRING, "imagetype": OPTION, "messagepropertyname": STRING,
            "attributes": STRING, "description": STRING,
        }, dict([_lk("sdkmessageprocessingstepid", "sdkmessageprocessingstep")]), has_state=False,
            required=("sdkmessageprocessingstepid", "entityalias", "imagetype", "messagepropertyname")),
    ]


TABLES: dict[str, Table] = {t.logical: t for t in _tables()}
BY_SET: dict[str, Table] = {t.entity_set: t for t in TABLES.values()}

# Labels of the choices (FormattedValues in webhook payloads, OptionSet metadata). Sources: the generated
# table references of MicrosoftDocs (ce/developer/reference/entities/<table>.md, "<Table> table/entity
# reference"); the activity states of orderclose follow every activity table (orderclose.md).
STATE_LABELS: dict[str, dict[int, str]] = {
    "salesorder": {0: "Active", 1: "Submitted", 2: "Canceled", 3: "Fulfilled", 4: "Invoiced"},
    "invoice": {0: "Active", 1: "Closed (deprecated)", 2: "Paid", 3: "Canceled"},
    "product": {0: "Active", 1: "Retired", 2: "Draft", 3: "Under Revision"},
    "sdkmessageprocessingstep": {0: "Enabled", 1: "Disabled"},
    "orderclose": {0: "Open", 1: "Completed", 2: "Canceled"},
}
STATUS_LABELS: dict[str, dict[int, str]] = {
    "salesorder": {1: "New", 2: "Pending", 3: "In Progress", 4: "No Money", 100001: "Complete",
                   100002: "Partial", 100003: "Invoiced"},
    "invoice": {1: "New", 2: "Partially Shipped", 4: "Billed", 5: "Booked (applies to services)",
                6: "Installed (applies to services)", 100001: "Complete", 100002: "Partial", 100003: "Canceled"},
    "product": {0: "Draft", 1: "Active", 2: "Retired", 3: "Under Revision"},
    "pricelevel": {100001: "Active", 100002: "Inactive"},
    "sdkmessageprocessingstep": {1: "Enabled", 2: "Disabled"},
    "orderclose": {1: "Open", 2: "Completed", 3: "Canceled"},
}
DEFAULT_STATE_LABELS = {0: "Active", 1: "Inactive"}
DEFAULT_STATUS_LABELS = {1: "Active", 2: "Inactive"}
CUSTOMER_TYPE_LABELS = {1: "Competitor", 2: "Consultant", 3: "Customer", 4: "Investor", 5: "Partner",
                        6: "Influencer", 7: "Press", 8: "Prospect", 9: "Reseller", 10: "Supplier",
                        11: "Vendor", 12: "Other"}
# Other choice columns, by (table, column); "*" is any table.
PICKLIST_LABELS: dict[tuple[str, str], dict[int, str]] = {
    ("account", "customertypecode"): CUSTOMER_TYPE_LABELS,
    ("product", "producttypecode"): {1: "Sales Inventory", 2: "Miscellaneous Charges", 3: "Services",
                                     4: "Flat Fees"},
    ("product", "productstructure"): {1: "Product", 2: "Product Family", 3: "Product Bundle"},
    ("productpricelevel", "pricingmethodcode"): {
        1: "Currency Amount", 2: "Percent of List", 3: "Percent Markup - Current Cost",
        4: "Percent Margin - Current Cost", 5: "Percent Markup - Standard Cost",
        6: "Percent Margin - Standard Cost"},
    ("productpricelevel", "quantitysellingcode"): {1: "No Control", 2: "Whole", 3: "Whole and Fractional"},
    ("systemuser", "accessmode"): {0: "Read-Write", 1: "Administrative", 2: "Read", 3: "Support User",
                                   4: "Non-interactive", 5: "Delegated Admin"},
    ("team", "teamtype"): {0: "Owner", 1: "Access", 2: "Security Group", 3: "Office Group"},
    ("serviceendpoint", "contract"): {1: "OneWay", 2: "Queue", 3: "Rest", 4: "TwoWay", 5: "Topic",
                                      6: "Queue (Persistent)", 7: "Event Hub", 8: "Webhook", 9: "Event Grid",
                                      10: "Managed Data Lake", 11: "Container Storage"},
    ("serviceendpoint", "authtype"): {0: "Not Specified", 1: "ACS", 2: "SAS Key", 3: "SAS Token",
                                      4: "Webhook Key", 5: "Http Header", 6: "Http Query String",
                                      7: "Connection String", 8: "Access Key", 9: "Managed Identity"},
    ("serviceendpoint", "connectionmode"): {1: "Normal", 2: "Federated"},
    ("serviceendpoint", "messageformat"): {1: "Binary XML", 2: "Json", 3: "Text XML"},
    ("serviceendpoint", "userclaim"): {1: "None", 2: "UserId", 3: "UserInfo"},
    ("sdkmessageprocessingstep", "stage"): {10: "Pre-validation", 20: "Pre-operation", 40: "Post-operation"},
    ("sdkmessageprocessingstep", "mode"): {0: "Synchronous", 1: "Asynchronous"},
    ("sdkmessageprocessingstep", "supporteddeployment"): {
        0: "Server Only", 1: "Microsoft Dynamics 365 Client for Outlook Only", 2: "Both"},
    ("sdkmessageprocessingstepimage", "imagetype"): {0: "PreImage", 1: "PostImage", 2: "Both"},
}


def choice_labels(logical: str, column: str) -> dict[int, str]:
    """Value → label of a choice column (state, status or picklist); empty when the stand-in knows none."""
    if column == "statecode":
        return STATE_LABELS.get(logical, DEFAULT_STATE_LABELS)
    if column == "statuscode":
        return STATUS_LABELS.get(logical, DEFAULT_STATUS_LABELS)
    return PICKLIST_LABELS.get((logical, column), {})
