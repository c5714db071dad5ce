"""The Business Central extension (deploy/bc-extension): the custom API `bcsync/integration/v1.0`.

No AL compiler runs here, so the extension is never built: these checks read app.json and the pages with
small regexes, and hold them against the sandbox's custom API and the mappings that read it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.files import DEPLOY

EXTENSION = DEPLOY / "bc-extension"
APP_JSON = EXTENSION / "app.json"
SOURCES = EXTENSION / "src"
API = "bcsync/integration/v1.0"

OBJECT = re.compile(r'^\s*(page|permissionset|table|tableextension|pageextension|codeunit|query|enum|report|xmlport)'
                    r'\s+(\d+)\s+("[^"]+"|\w+)', re.IGNORECASE | re.MULTILINE)
# A page-level property: `Name = value;` at the header's indentation (4 spaces), up to its semicolon.
PROPERTY = re.compile(r"^    (\w+)\s*=\s*([^;]*);", re.MULTILINE)
# `field(name; expression)`: name optionally quoted (`"code"`).
FIELD = re.compile(r'^\s*field\(\s*"?(\w+)"?\s*;\s*([^)]+?)\s*\)\s*$', re.MULTILINE)


def strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL))


@dataclass(frozen=True)
class AlObject:
    kind: str
    number: int
    name: str
    path: Path
    properties: dict[str, str]
    fields: dict[str, str]  # JSON property -> source expression


def parse(path: Path) -> list[AlObject]:
    text = strip_comments(path.read_text(encoding="utf-8-sig"))
    matches = list(OBJECT.finditer(text))
    objects = []
    for i, match in enumerate(matches):
        body = text[match.end():matches[i + 1].start() if i + 1 < len(matches) else len(text)]
        properties = {k.lower(): " ".join(v.split()) for k, v in PROPERTY.findall(body)}
        fields: dict[str, str] = {}
        for name, expression in FIELD.findall(body):
            assert name not in fields, f"{path.name}: field {name} twice"
            fields[name] = expression
        objects.append(AlObject(match.group(1).lower(), int(match.group(2)), match.group(3).strip('"'), path,
                                properties, fields))
    return objects


def unquote(value: str) -> str:
    return value.strip().strip("'")


@pytest.fixture(scope="module")
def app() -> dict[str, Any]:
    return json.loads(APP_JSON.read_text(encoding="utf-8-sig"))


@pytest.fixture(scope="module")
def objects() -> list[AlObject]:
    found = [obj for path in sorted(SOURCES.rglob("*.al")) for obj in parse(path)]
    assert found, f"no AL objects under {SOURCES}"
    return found


@pytest.fixture(scope="module")
def pages(objects: list[AlObject]) -> dict[str, AlObject]:
    """API pages by EntitySetName."""
    result = {}
    for obj in objects:
        if obj.kind == "page":
            assert obj.properties.get("pagetype", "").lower() == "api", f"{obj.name}: not an API page"
            entity_set = unquote(obj.properties["entitysetname"])
            assert entity_set not in result, f"two pages serve {entity_set}"
            result[entity_set] = obj
    return result


def custom_entities() -> dict[str, set[str]]:
    from sandbox.bc.entities import CUSTOM, ENTITIES

    assert CUSTOM == API
    return {name: set(entity.fields) for name, entity in ENTITIES.items() if entity.api == CUSTOM}


def mapped_bc_fields() -> dict[str, set[str]]:
    """Entity set -> every BC field the custom-API mappings name: field maps, match keys, templates, filters."""
    from schemas.mappings import MAPPINGS

    result: dict[str, set[str]] = {}
    for mapping in MAPPINGS:
        if mapping.bc_api != API:
            continue
        names = result.setdefault(mapping.bc_entity, set())
        for field_map in mapping.fields:
            names.update(part.strip() for part in field_map.bc.split("+"))
        names.update(bc for bc, _ in mapping.match_keys)
        names.update(bc for bc, _ in mapping.bc_template)
        if mapping.bc_filter:
            names.update(re.findall(r"\b([A-Za-z]\w*)\s+(?:eq|ne|gt|ge|lt|le)\b", mapping.bc_filter))
    return result


def test_app_json(app: dict[str, Any]) -> None:
    for key in ("id", "name", "publisher", "version", "idRanges", "runtime", "platform", "application",
                "brief", "description"):
        assert app.get(key), f"app.json: {key} missing"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", app["id"])
    assert app["id"] != "00000000-0000-0000-0000-000000000000"
    assert app["name"] == "bcsync integration API"
    assert app["publisher"] == "bcsync"
    assert app["version"] == "1.0.0.0"
    assert app["platform"] == app["application"] == "24.0.0.0"
    assert app["runtime"] == "13.0"  # BC 24 (runtime = major - 11)
    assert "NoImplicitWith" in app.get("features", [])
    assert app.get("target") == "Cloud"


def test_every_page_is_a_read_only_webhook_capable_custom_api(pages: dict[str, AlObject]) -> None:
    publisher, group, version = API.split("/")
    for entity_set, page in pages.items():
        props = {k: v.lower() for k, v in page.properties.items()}
        where = f"{page.path.name} ({entity_set})"
        assert unquote(props.get("apipublisher", "")) == publisher, where
        assert unquote(props.get("apigroup", "")) == group, where
        assert unquote(props.get("apiversion", "")) == version, where
        # A single-field key is what BC needs to send webhooks (above all for Price List Line's two-field PK).
        assert props.get("odatakeyfields") == "systemid", where
        assert props.get("delayedinsert") == "true", where
        assert props.get("editable") == "false", where
        for allowed in ("insertallowed", "modifyallowed", "deleteallowed"):
            assert props.get(allowed) == "false", f"{where}: {allowed}"
        assert props.get("extensible") == "false", where
        assert props.get("sourcetabletemporary", "false") == "false", where  # temporary: no webhooks
        for key in ("entityname", "entitycaption", "entitysetcaption", "sourcetable"):
            assert props.get(key), f"{where}: {key} missing"
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", unquote(page.properties["entityname"])), where
        assert page.fields.get("id", "").lower() == "rec.systemid", where
        assert page.fields.get("lastModifiedDateTime", "").lower() == "rec.systemmodifiedat", where
        for name in page.fields:
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*", name), f"{where}: {name} is not camelCase"


def test_entity_sets_and_tables(pages: dict[str, AlObject]) -> None:
    assert set(pages) == {"resources", "customerPriceGroups", "salesPrices"}
    tables = {name: unquote(page.properties["sourcetable"]).strip('"') for name, page in pages.items()}
    assert tables == {"resources": "Resource", "customerPriceGroups": "Customer Price Group",
                      "salesPrices": "Price List Line"}


def test_sales_prices_view_keeps_inactive_lines(pages: dict[str, AlObject]) -> None:
    """Filtered to customer-price-group item sales prices, never on Status: a line turning Inactive must still
    be inside the view, or BC sends no notification for it."""
    view = pages["salesPrices"].properties.get("sourcetableview", "")
    assert re.search(r'"Price Type"\s*=\s*const\(Sale\)', view), view
    assert re.search(r'"Source Type"\s*=\s*const\("Customer Price Group"\)', view), view
    assert re.search(r'"Asset Type"\s*=\s*const\(Item\)', view), view
    assert "status" not in view.lower(), view
    assert pages["salesPrices"].fields["status"] == "Rec.Status"


@pytest.mark.parametrize("entity_set", ["resources", "customerPriceGroups", "salesPrices"])
def test_page_fields_equal_the_sandbox_custom_api(pages: dict[str, AlObject], entity_set: str) -> None:
    sandbox = custom_entities()
    assert set(sandbox) == set(pages), "the sandbox's custom API serves other entity sets than the extension"
    served = set(pages[entity_set].fields)
    assert served == sandbox[entity_set], (
        f"{entity_set}: only on the page {sorted(served - sandbox[entity_set])}, "
        f"only in the sandbox {sorted(sandbox[entity_set] - served)}")


def test_every_mapped_bc_field_is_on_its_page(pages: dict[str, AlObject]) -> None:
    mapped = mapped_bc_fields()
    assert set(mapped) == {"resources", "customerPriceGroups", "salesPrices"}
    for entity_set, names in mapped.items():
        assert entity_set in pages, f"a mapping reads {entity_set}, which no page serves"
        missing = names - set(pages[entity_set].fields)
        assert not missing, f"{entity_set}: the mappings use {sorted(missing)}, which the page lacks"


def test_object_ids_unique_and_in_range(app: dict[str, Any], objects: list[AlObject]) -> None:
    ranges = [(r["from"], r["to"]) for r in app["idRanges"]]
    seen: dict[tuple[str, int], str] = {}
    names: dict[tuple[str, str], int] = {}
    for obj in objects:
        assert any(low <= obj.number <= high for low, high in ranges), f"{obj.kind} {obj.number} outside {ranges}"
        assert (obj.kind, obj.number) not in seen, f"{obj.kind} {obj.number}: {obj.name} and {seen[(obj.kind, obj.number)]}"
        seen[(obj.kind, obj.number)] = obj.name
        assert (obj.kind, obj.name.lower()) not in names, f"{obj.kind} {obj.name} twice"
        names[(obj.kind, obj.name.lower())] = obj.number
        assert len(obj.name) <= 30, f"{obj.name}: object names have at most 30 characters"
    assert {obj.kind for obj in objects} == {"page", "permissionset"}


def test_permission_set_reads_the_source_tables(objects: list[AlObject], pages: dict[str, AlObject]) -> None:
    (permissions,) = [obj for obj in objects if obj.kind == "permissionset"]
    assert len(permissions.name) <= 20  # an assignable permission set's name (AL0305)
    text = strip_comments(permissions.path.read_text(encoding="utf-8-sig"))
    granted = {name.strip('"').lower(): rights for name, rights in
               re.findall(r'tabledata\s+("[^"]+"|\w+)\s*=\s*(\w+)', text, re.IGNORECASE)}
    needed = {unquote(page.properties["sourcetable"]).strip('"').lower() for page in pages.values()}
    needed |= {"price list header", "item"}  # currencyCode and itemId are looked up there
    for table in needed:
        assert "R" in granted.get(table, ""), f"no read access to {table}"
    executable = {name.strip('"').lower() for name in re.findall(r'\bpage\s+("[^"]+"|\w+)\s*=\s*X', text)}
    assert executable == {page.name.lower() for page in pages.values()}
