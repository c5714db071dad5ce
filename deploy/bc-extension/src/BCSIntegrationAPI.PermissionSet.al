// Read access for the user (or Entra application) that bcsync signs in as: the tables the
// bcsync integration API pages read, and the pages themselves.
// "Sales Price Access" is there because "Unit Price" of Price List Line is only accessible with
// read access to it (AccessByPermission on that field).
// The name of an assignable permission set may have at most 20 characters.
permissionset 50100 "BCS Integration API"
{
    Assignable = true;
    Caption = 'bcsync integration API (read)';

    Permissions =
        tabledata Resource = R,
        tabledata "Customer Price Group" = R,
        tabledata "Price List Header" = R,
        tabledata "Price List Line" = R,
        tabledata Item = R,
        tabledata "Sales Price Access" = R,
        page "BCS Resources API" = X,
        page "BCS Customer Price Groups API" = X,
        page "BCS Sales Prices API" = X;
}
