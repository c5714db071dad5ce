// Item prices of customer price groups (table 7001 "Price List Line", the new pricing model) for
// the bcsync mapping SALESPRC-PRODPRICE.
// GET {BC service root}/api/bcsync/integration/v1.0/companies(<id>)/salesPrices
// Read-only.
//
// Webhooks: the primary key of Price List Line has two fields ("Price List Code", "Line No."),
// and BC sends no notifications for an API page with a composite key. ODataKeyFields = SystemId
// gives the page a single-field key, which is what makes this page webhook-capable.
//
// The view holds sales price lines assigned to a customer price group for an item. It does NOT
// filter on Status: BC notifies only for records inside the view, so a line that becomes Inactive
// (or Draft, when its price list is reopened) must stay inside it for its change to be notified.
// The line's status is served instead (status), and bcsync decides what to do with it.
// Discount-only lines ("Amount Type" = Discount) are left out: they carry no price.
//
// Prices are read from Price List Line only. BC uses it when the feature "New sales pricing
// experience" is enabled; with the legacy experience prices live in table 7002 "Sales Price",
// which this page does not read.
page 50102 "BCS Sales Prices API"
{
    PageType = API;
    APIPublisher = 'bcsync';
    APIGroup = 'integration';
    APIVersion = 'v1.0';
    EntityName = 'salesPrice';
    EntitySetName = 'salesPrices';
    EntityCaption = 'Sales Price';
    EntitySetCaption = 'Sales Prices';
    Caption = 'bcsync Sales Prices API';
    SourceTable = "Price List Line";
    SourceTableView = where("Price Type" = const(Sale),
                            "Source Type" = const("Customer Price Group"),
                            "Asset Type" = const(Item),
                            "Amount Type" = filter(Price | Any));
    ODataKeyFields = SystemId;
    DelayedInsert = true;
    Editable = false;
    InsertAllowed = false;
    ModifyAllowed = false;
    DeleteAllowed = false;
    Extensible = false;

    layout
    {
        area(Content)
        {
            repeater(Records)
            {
                field(id; Rec.SystemId)
                {
                    Caption = 'Id';
                }
                // The item's SystemId (the id of items in API v2.0), looked up from "Asset No.".
                // Empty GUID when the item does not exist. Not filterable (not a table field).
                field(itemId; ItemSystemId)
                {
                    Caption = 'Item Id';
                }
                field(customerPriceGroupCode; Rec."Source No.")
                {
                    Caption = 'Customer Price Group Code';
                }
                field(currencyCode; Rec."Currency Code")
                {
                    Caption = 'Currency Code';
                }
                field(unitOfMeasureCode; Rec."Unit of Measure Code")
                {
                    Caption = 'Unit of Measure Code';
                }
                field(unitPrice; Rec."Unit Price")
                {
                    Caption = 'Unit Price';
                }
                field(minimumQuantity; Rec."Minimum Quantity")
                {
                    Caption = 'Minimum Quantity';
                }
                // Enum "Price Status": Draft, Active or Inactive (only Active prices are used by BC).
                field(status; Rec.Status)
                {
                    Caption = 'Status';
                }
                field(lastModifiedDateTime; Rec.SystemModifiedAt)
                {
                    Caption = 'Last Modified Date Time';
                }
            }
        }
    }

    var
        ItemSystemId: Guid;

    trigger OnAfterGetRecord()
    begin
        ItemSystemId := GetItemSystemId(Rec."Asset No.");
    end;

    local procedure GetItemSystemId(ItemNo: Code[20]): Guid
    var
        Item: Record Item;
        NoItem: Guid;
    begin
        if ItemNo = '' then
            exit(NoItem);
        Item.SetLoadFields("No.");
        if Item.Get(ItemNo) then
            exit(Item.SystemId);
        exit(NoItem);
    end;
}
