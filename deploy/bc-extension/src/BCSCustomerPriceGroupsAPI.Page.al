// Customer price groups (table 6 "Customer Price Group") for the bcsync mapping CUSTPRCGRP-PRICE.
// GET {BC service root}/api/bcsync/integration/v1.0/companies(<id>)/customerPriceGroups
// Read-only. Keyed on SystemId, so BC can send webhook notifications for it.
//
// currencyCode: table 6 has no currency. In BC's pricing a currency belongs to a price list
// (table 7000 "Price List Header", copied onto its lines), and one group may even have price
// lists in several currencies. Dataverse's price list (pricelevel) needs exactly one currency, so
// this page computes it: the currency of the first Active sales price list (by code) whose
// assign-to is this customer price group. Blank means the local currency (LCY), also when the
// group has no such price list.
// Limitations of a computed field:
// - webhooks are raised by changes to table 6 only: changing the currency of a price list (or
//   activating another one) does NOT notify the group. It is picked up when the group itself
//   changes or when bcsync reconciles/synchronizes in full.
// - it cannot be used in $filter or $orderby (it is not a table field).
page 50101 "BCS Customer Price Groups API"
{
    PageType = API;
    APIPublisher = 'bcsync';
    APIGroup = 'integration';
    APIVersion = 'v1.0';
    EntityName = 'customerPriceGroup';
    EntitySetName = 'customerPriceGroups';
    EntityCaption = 'Customer Price Group';
    EntitySetCaption = 'Customer Price Groups';
    Caption = 'bcsync Customer Price Groups API';
    SourceTable = "Customer Price Group";
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
                field("code"; Rec.Code)
                {
                    Caption = 'Code';
                }
                field(description; Rec.Description)
                {
                    Caption = 'Description';
                }
                field(currencyCode; PriceListCurrencyCode)
                {
                    Caption = 'Currency Code';
                }
                field(lastModifiedDateTime; Rec.SystemModifiedAt)
                {
                    Caption = 'Last Modified Date Time';
                }
            }
        }
    }

    var
        PriceListCurrencyCode: Code[10];

    trigger OnAfterGetRecord()
    begin
        PriceListCurrencyCode := GetPriceListCurrencyCode(Rec.Code);
    end;

    local procedure GetPriceListCurrencyCode(GroupCode: Code[10]): Code[10]
    var
        PriceListHeader: Record "Price List Header";
    begin
        PriceListHeader.SetLoadFields("Currency Code");
        PriceListHeader.SetRange("Price Type", PriceListHeader."Price Type"::Sale);
        PriceListHeader.SetRange("Source Type", PriceListHeader."Source Type"::"Customer Price Group");
        PriceListHeader.SetRange("Source No.", GroupCode);
        PriceListHeader.SetRange(Status, PriceListHeader.Status::Active);
        // A discount-only list says nothing about the currency of the group's prices.
        PriceListHeader.SetFilter("Amount Type", '<>%1', PriceListHeader."Amount Type"::Discount);
        if PriceListHeader.FindFirst() then
            exit(PriceListHeader."Currency Code");
        exit('');
    end;
}
