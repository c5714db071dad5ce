// Resources (table 156 Resource) for the bcsync mapping RESOURCE-PRODUCT.
// GET {BC service root}/api/bcsync/integration/v1.0/companies(<id>)/resources
// Read-only. Keyed on SystemId, so BC can send webhook notifications for it.
page 50100 "BCS Resources API"
{
    PageType = API;
    APIPublisher = 'bcsync';
    APIGroup = 'integration';
    APIVersion = 'v1.0';
    EntityName = 'resource';
    EntitySetName = 'resources';
    EntityCaption = 'Resource';
    EntitySetCaption = 'Resources';
    Caption = 'bcsync Resources API';
    SourceTable = Resource;
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
                field(number; Rec."No.")
                {
                    Caption = 'No.';
                }
                field(displayName; Rec.Name)
                {
                    Caption = 'Display Name';
                }
                field(baseUnitOfMeasureCode; Rec."Base Unit of Measure")
                {
                    Caption = 'Base Unit of Measure Code';
                }
                field(unitPrice; Rec."Unit Price")
                {
                    Caption = 'Unit Price';
                }
                field(unitCost; Rec."Unit Cost")
                {
                    Caption = 'Unit Cost';
                }
                field(blocked; Rec.Blocked)
                {
                    Caption = 'Blocked';
                }
                field(lastModifiedDateTime; Rec.SystemModifiedAt)
                {
                    Caption = 'Last Modified Date Time';
                }
            }
        }
    }
}
