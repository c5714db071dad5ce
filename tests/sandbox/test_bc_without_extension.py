"""custom_api False: BC without the bcsync extension. Every route of api/bcsync/integration/v1.0 answers 404
"No HTTP resource was found that matches the request URI" (microsoft/AL #8283, #7889)."""

from __future__ import annotations

import re
import sys

import httpx
import pytest

from sandbox import __main__ as sandbox_main
from sandbox.config import SandboxConfig
from tests.sandbox.conftest import COMPANY, CUSTOM, ROOT, make

WITHOUT = pytest.mark.parametrize("bc_config", [{"custom_api": False}], indirect=True)
CUSTOM_ROOT = ROOT.replace("/api/v2.0", "/api/bcsync/integration/v1.0")
COMPANY_ID = COMPANY.split("(")[1].rstrip(")")
NOT_FOUND = re.compile(r"^No HTTP resource was found that matches the request URI '(?P<url>[^']+)'\.  "
                       r"CorrelationId:  [0-9a-f-]{36}\.$")


@WITHOUT
@pytest.mark.parametrize(("method", "path"), [
    ("GET", f"{CUSTOM}/resources"), ("POST", f"{CUSTOM}/customerPriceGroups"), ("GET", f"{CUSTOM}/salesPrices"),
    ("GET", f"{CUSTOM_ROOT}/companies"), ("POST", f"{CUSTOM_ROOT}/subscriptions"), ("GET", f"{CUSTOM_ROOT}/$metadata"),
])
async def test_custom_routes_answer_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path, json={"code": "X"} if method == "POST" else None)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "BadRequest_NotFound"
    match = NOT_FOUND.match(error["message"])
    assert match and match["url"] == f"http://bc.test{path}"


@WITHOUT
async def test_404_quotes_the_query_too(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{CUSTOM}/resources", params={"$top": "1"})
    match = NOT_FOUND.match(response.json()["error"]["message"])
    assert match and match["url"] == f"http://bc.test{CUSTOM}/resources?$top=1"


@WITHOUT
async def test_standard_api_unaffected_and_not_listed(client: httpx.AsyncClient) -> None:
    assert (await make(client, "customers", {"displayName": "Adatum"}))["number"] == "C00010"
    url = ROOT.replace("/api/v2.0", "/api/microsoft/runtime/beta") + f"/companies({COMPANY_ID})/webhookSupportedResources"
    names = [r["resource"] for r in (await client.get(url)).json()["value"]]
    assert "v2.0/customers" in names and not [n for n in names if n.startswith("bcsync/")]
    metadata = await client.get(f"{ROOT}/$metadata")
    assert metadata.status_code == 200 and 'Name="resource"' not in metadata.text


@WITHOUT
async def test_seed_skips_custom_sets(client: httpx.AsyncClient) -> None:
    created = (await client.post("/_sandbox/seed", json={"customers": 2, "items": 5, "resources": 3,
                                                         "priceGroups": 2})).json()["created"]
    assert created["customers"] == 2 and created["items"] == 5
    assert not {"resources", "customerPriceGroups", "salesPrices"} & set(created)
    counts = (await client.get("/_sandbox/state")).json()["counts"]
    assert counts["resources"] == counts["customerPriceGroups"] == counts["salesPrices"] == 0


async def test_installed_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{CUSTOM}/resources")).status_code == 200
    assert (await client.get(f"{CUSTOM_ROOT}/$metadata")).status_code == 200


def test_python_m_sandbox_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[SandboxConfig] = []
    monkeypatch.setattr(sandbox_main, "run", seen.append)
    monkeypatch.setattr(sys, "argv", ["python -m sandbox", "--without-extension"])
    sandbox_main.main()
    monkeypatch.setattr(sys, "argv", ["python -m sandbox"])
    sandbox_main.main()
    assert [c.custom_api for c in seen] == [False, True]


def test_bcsync_sandbox_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import sandbox.main
    from service.cli import app

    seen: list[SandboxConfig] = []
    monkeypatch.setattr(sandbox.main, "run", seen.append)
    monkeypatch.delenv("BCSYNC_SANDBOX_CUSTOM_API", raising=False)
    assert CliRunner().invoke(app, ["sandbox", "--without-extension"]).exit_code == 0
    assert CliRunner().invoke(app, ["sandbox"]).exit_code == 0
    monkeypatch.setenv("BCSYNC_SANDBOX_CUSTOM_API", "false")  # the same through the environment
    assert CliRunner().invoke(app, ["sandbox"]).exit_code == 0
    assert [c.custom_api for c in seen] == [False, True, False]
