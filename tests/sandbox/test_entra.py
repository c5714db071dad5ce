"""The Entra stand-in, live over HTTPS with the sandbox's own CA: the real MSAL library gets a token
that the BC stand-in accepts; wrong client, secret, grant or scope get Entra's errors."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import msal
import pytest

from sandbox.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID
from tests.sandbox.conftest import Live

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"


def test_msal_gets_a_token_bc_accepts(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(live.config.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", live.config.ca_file)
    app = msal.ConfidentialClientApplication(DEMO_CLIENT_ID, client_credential=DEMO_CLIENT_SECRET,
                                             authority=live.authority, instance_discovery=False)
    result = app.acquire_token_for_client(scopes=[BC_SCOPE])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    again = app.acquire_token_for_client(scopes=[BC_SCOPE])
    assert again["access_token"] == result["access_token"]  # MSAL's cache
    base = f"http://127.0.0.1:{live.config.bc_port}/v2.0/{DEMO_TENANT_ID}/production/api/v2.0"
    response = httpx.get(f"{base}/companies({DEMO_COMPANY_ID})/customers",
                         headers={"Authorization": f"Bearer {result['access_token']}"})
    assert response.status_code == 200 and response.json()["value"] == []
    wrong = msal.ConfidentialClientApplication(DEMO_CLIENT_ID, client_credential="wrong", authority=live.authority,
                                               instance_discovery=False)
    failed = wrong.acquire_token_for_client(scopes=[BC_SCOPE])
    assert failed["error"] == "invalid_client" and 7000215 in failed["error_codes"]


def test_metadata_and_keys(live: Live) -> None:
    with live.https() as http:
        meta = http.get(f"{live.authority}/v2.0/.well-known/openid-configuration").json()
        assert meta["token_endpoint"] == f"{live.authority}/oauth2/v2.0/token"
        assert meta["issuer"] == f"{live.authority}/v2.0"
        assert http.get(f"{live.authority}/.well-known/openid-configuration").status_code == 200
        keys = http.get(meta["jwks_uri"]).json()["keys"]
        assert keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"
        other = http.get(f"https://127.0.0.1:{live.config.entra_port}/common-nope/v2.0/.well-known/openid-configuration")
        assert other.status_code == 400 and other.json()["error_codes"] == [90002]


def test_token_errors(live: Live) -> None:
    url = f"{live.authority}/oauth2/v2.0/token"
    good = {"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET, "scope": BC_SCOPE,
            "grant_type": "client_credentials"}
    with live.https() as http:
        assert http.post(url, data=good).status_code == 200
        basic = http.post(url, data={"scope": BC_SCOPE, "grant_type": "client_credentials"},
                          auth=(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET))
        assert basic.status_code == 200
        cases = [
            ({"client_secret": "x"}, 401, "invalid_client"),
            ({"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client"),
            ({"grant_type": "password"}, 400, "unsupported_grant_type"),
            ({"scope": "https://api.businesscentral.dynamics.com/user_impersonation"}, 400, "invalid_scope"),
            ({"scope": ""}, 400, "invalid_request"),
        ]
        for change, status, error in cases:
            response = http.post(url, data={**good, **change})
            assert (response.status_code, response.json()["error"]) == (status, error), change
            assert response.json()["error_description"].startswith("AADSTS")


def test_tokens_expire(live: Live) -> None:
    url = f"{live.authority}/oauth2/v2.0/token"
    with live.https() as http:
        http.post(f"https://127.0.0.1:{live.config.entra_port}/_sandbox/tokens", json={"lifetime": 1})
        token = http.post(url, data={"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
                                     "scope": BC_SCOPE, "grant_type": "client_credentials"}).json()
        http.post(f"https://127.0.0.1:{live.config.entra_port}/_sandbox/tokens", json={"lifetime": 3600})
    assert token["expires_in"] == 1
    time.sleep(2.1)
    base = f"http://127.0.0.1:{live.config.bc_port}/v2.0/{DEMO_TENANT_ID}/production/api/v2.0"
    response = httpx.get(f"{base}/companies", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
