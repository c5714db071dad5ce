from schemas.mappings import BY_NAME, MAPPINGS, Direction, dependency_order, mappings_for


def test_the_eleven_mappings_of_the_docs() -> None:
    assert [m.name for m in MAPPINGS] == [
        "SALESPEOPLE", "CURRENCY", "UNITOFMEASURE", "CUSTOMER", "CONTACT", "ITEM-PRODUCT", "RESOURCE-PRODUCT",
        "CUSTPRCGRP-PRICE", "SALESPRC-PRODPRICE", "SALESORDER-ORDER", "POSTEDSALESINV-INV",
    ]
    assert BY_NAME["CUSTOMER"].direction is Direction.BOTH
    assert BY_NAME["SALESPEOPLE"].direction is Direction.FROM_CRM


def test_dependency_order_puts_every_dependency_first() -> None:
    order = dependency_order()
    assert sorted(order) == sorted(m.name for m in MAPPINGS)
    for mapping in MAPPINGS:
        for dependency in mapping.depends_on:
            assert order.index(dependency) < order.index(mapping.name), (dependency, mapping.name)
    assert order.index("SALESPEOPLE") < order.index("CUSTOMER")
    assert order.index("UNITOFMEASURE") < order.index("ITEM-PRODUCT")
    assert order.index("CUSTPRCGRP-PRICE") < order.index("SALESPRC-PRODPRICE")


def test_events_are_routed_to_the_mappings_that_use_the_entity() -> None:
    assert [m.name for m in mappings_for("dataverse", "account")] == ["CUSTOMER"]
    assert [m.name for m in mappings_for("business_central", "customers")] == ["CUSTOMER"]
    assert [m.name for m in mappings_for("dataverse", "product")] == ["ITEM-PRODUCT", "RESOURCE-PRODUCT"]
    assert [m.name for m in mappings_for("dataverse", "salesorderdetail")] == ["SALESORDER-ORDER"]
    assert [m.name for m in mappings_for("business_central", "salesPrices")] == ["SALESPRC-PRODPRICE"]
    assert mappings_for("dataverse", "lead") == []
    assert mappings_for("business_central", "vendors") == []
