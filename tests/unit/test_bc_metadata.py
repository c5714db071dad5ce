"""Business Central's `$metadata` (CSDL), enum values as BC writes them, and filters over them."""

from __future__ import annotations

import httpx
import pytest
import respx

from schemas.bc_metadata import MetadataError, decode_name, parse
from schemas.odata_filter import fields, matches
from service.connectors.business_central import BusinessCentralClient, plain_options
from tests.unit.test_connector_business_central import C, bc  # noqa: F401 - the fixture

# The shape of "Developing a custom API" (EnumType with Member elements; enum-typed properties) and of any
# OData v4 CSDL document; BC's way of marking read-only fields is not documented (two readings below).
CSDL = b"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="Microsoft.NAV" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EnumType Name="customerBlocked">
        <Member Name="_x0020_" Value="0"/><Member Name="Ship" Value="1"/>
        <Member Name="Invoice" Value="2"/><Member Name="All" Value="3"/>
      </EnumType>
      <EntityType Name="customer">
        <Key><PropertyRef Name="id"/></Key>
        <Property Name="id" Type="Edm.Guid" Nullable="false">
          <Annotation Term="Org.OData.Core.V1.Computed" Bool="true"/>
        </Property>
        <Property Name="displayName" Type="Edm.String" MaxLength="100"/>
        <Property Name="blocked" Type="Microsoft.NAV.customerBlocked"/>
        <Property Name="balanceDue" Type="Edm.Decimal">
          <Annotation Term="Org.OData.Core.V1.Permissions"><EnumMember>Org.OData.Core.V1.Permission/Read</EnumMember></Annotation>
        </Property>
      </EntityType>
      <EntityContainer Name="NAV">
        <EntitySet Name="customers" EntityType="Microsoft.NAV.customer"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>"""


def test_entity_sets_fields_read_only_and_enum_members() -> None:
    customers = parse(CSDL)["customers"]
    assert set(customers) == {"id", "displayName", "blocked", "balanceDue"}
    assert customers["id"].read_only and customers["balanceDue"].read_only and not customers["displayName"].read_only
    assert customers["blocked"].members == (" ", "Ship", "Invoice", "All")
    assert customers["displayName"].members is None


@pytest.mark.parametrize("document", [b"<html>not found</html>", b"not xml at all", b""])
def test_a_document_that_is_not_csdl_is_refused(document: bytes) -> None:
    with pytest.raises(MetadataError):
        parse(document)


def test_entity_expansion_is_refused() -> None:  # defusedxml: a hostile document cannot blow up memory
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>'
    with pytest.raises(Exception):  # noqa: B017 - defusedxml's own error type
        parse(bomb)


def test_xml_encoded_names_decode() -> None:
    assert decode_name("_x0020_") == " "
    assert decode_name("In_x0020_Review") == "In Review"
    assert decode_name("Positive_x0020_Adjmt_x002E_") == "Positive Adjmt."
    assert decode_name("Paid") == "Paid"


@pytest.mark.parametrize(("value", "blocked"), [("_x0020_", False), (" ", False), ("", False), ("Ship", True),
                                                ("All", True)])
def test_the_blank_option_passes_the_customer_filter_in_either_spelling(value: str, blocked: bool) -> None:
    # API v2.0 writes the blank member of an enum as "_x0020_" (customers.blocked, page 30009 "APIV2 - Customers").
    assert matches("blocked eq ' '", {"blocked": value}) is not blocked
    assert matches("blocked eq '_x0020_'", {"blocked": value}) is not blocked


def test_encoded_enum_values_compare_decoded() -> None:
    assert not matches("status ne 'Draft' and status ne 'In Review'", {"status": "In_x0020_Review"})
    assert matches("status ne 'Draft' and status ne 'In Review'", {"status": "Open"})


def test_the_fields_a_filter_compares() -> None:
    assert fields("statecode eq 0 and (customertypecode eq 3 or name ne 'x')") == ["statecode", "customertypecode",
                                                                                    "name"]
    assert fields(None) == []


def test_every_encoded_option_of_a_record_and_its_lines_reads_decoded() -> None:
    record = {"blocked": "_x0020_", "status": "In_x0020_Review", "type": "Non_x002D_Inventory",
              "displayName": "Fabrikam _x0020_ Ltd.", "city": "Bath",
              "salesInvoiceLines": [{"lineType": "Fixed_x0020_Asset", "quantity": 1}]}
    assert plain_options(record) == {"blocked": "", "status": "In Review", "type": "Non-Inventory",
                                     "displayName": "Fabrikam _x0020_ Ltd.", "city": "Bath",
                                     "salesInvoiceLines": [{"lineType": "Fixed Asset", "quantity": 1}]}


@respx.mock
async def test_the_client_reads_blank_options_as_blank(bc: BusinessCentralClient) -> None:  # noqa: F811
    customer = {"id": "1", "number": "C00270", "blocked": "_x0020_"}
    respx.get(f"{C}/customers(1)").mock(return_value=httpx.Response(200, json=customer))
    respx.get(f"{C}/customers").mock(return_value=httpx.Response(200, json={"value": [customer]}))
    assert (await bc.get("customers", "1"))["blocked"] == ""  # type: ignore[index]
    assert [c["blocked"] async for c in bc.list("customers")] == [""]
