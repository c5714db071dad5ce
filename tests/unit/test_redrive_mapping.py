"""Which mapping a dead letter belongs to (`dead_letter_mapping`), from every form RabbitMQ and bcsync give it."""

from typing import Any

import pytest

from service.api.admin_records import dead_letter_mapping
from service.topology import MAPPING_HEADER, Topology

T = Topology("prod")


def death(queue: str, reason: str = "delivery_limit") -> dict[str, Any]:
    return {"queue": queue, "reason": reason, "count": 1, "exchange": "prod.events", "routing-keys": ["bc.customers"]}


@pytest.mark.parametrize(("headers", "routing_key", "expected"), [
    # the worker's dead letters (retry budget spent): the header, and the mapping's name as routing key
    ({MAPPING_HEADER: "CUSTOMER"}, "CUSTOMER", ("CUSTOMER", "")),
    ({MAPPING_HEADER: b"CONTACT"}, "dataverse.contact", ("CONTACT", "")),  # a header read as bytes
    # a quorum queue past its delivery limit: only RabbitMQ's headers (3.10: `x-death`, `x-first-death-*`)
    ({"x-death": [death("prod.mapping.CONTACT")], "x-first-death-queue": "prod.mapping.CONTACT"},
     "dataverse.contact", ("CONTACT", "")),
    ({"x-death": [{**death("prod.mapping.CONTACT"), "queue": b"prod.mapping.CONTACT"}]}, "x", ("CONTACT", "")),
    ({"x-death": [death("prod.mapping.ITEM-PRODUCT"), death("prod.mapping.CUSTOMER", "rejected")]},
     "dataverse.product", ("ITEM-PRODUCT", "")),  # the latest death first
    # 3.13+/4: `x-last-death-*` / `x-first-death-*` without (or before reading) `x-death`
    ({"x-last-death-queue": "prod.mapping.CUSTOMER", "x-last-death-reason": "delivery_limit"}, "bc.customers",
     ("CUSTOMER", "")),
    ({"x-first-death-queue": "prod.mapping.CUSTOMER"}, "bc.customers", ("CUSTOMER", "")),
    # a header naming no mapping of this release, but the queue it died in does
    ({MAPPING_HEADER: "OLD-NAME", "x-death": [death("prod.mapping.CUSTOMER")]}, "bc.customers", ("CUSTOMER", "")),
    # published by the api straight to a mapping queue (routing key = queue name), then past the limit
    ({}, "prod.mapping.SALESPEOPLE", ("SALESPEOPLE", "")),
    # nothing names a mapping (an event routing key names tables, not a mapping; another namespace's queue)
    ({}, "dataverse.product", (None, "no_mapping")),
    ({}, None, (None, "no_mapping")),
    ({"x-death": [death("staging.mapping.CUSTOMER")]}, "bc.customers", (None, "no_mapping")),
    ({"x-death": "garbage", MAPPING_HEADER: b"\xff"}, "", (None, "no_mapping")),
    # it names a mapping this release does not have
    ({MAPPING_HEADER: "RETIRED"}, "RETIRED", (None, "unknown_mapping: RETIRED")),
    ({"x-death": [death("prod.mapping.RETIRED")]}, "bc.customers", (None, "unknown_mapping: RETIRED")),
])
def test_the_mapping_of_a_dead_letter(headers: dict[str, Any], routing_key: str | None,
                                      expected: tuple[str | None, str]) -> None:
    assert dead_letter_mapping(headers, routing_key, T) == expected
