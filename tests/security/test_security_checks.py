"""The security checks of the production issue, each with a test (the api in-process, without its lifespan;
the store and broker are fakes or absent, so a request that gets past a check it should fail shows up).

- the admin bearer token: compared in constant time, refused without it, every /admin route behind it;
- the webhook secrets (Dataverse key, BC clientState): likewise;
- request size limits: 1 MiB on the Dataverse door and on every other route, declared or streamed (the
  Business Central door reads a batch as it streams, with its own limits: see test_bc_notification_stream.py);
- the BC handshake: see test_parser_fuzz.py (property) and the checks below;
- secrets redacted from logs and from error messages (stored, returned, printed at start).
"""

from __future__ import annotations

import hmac
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.api import deps
from service.connectors.auth import TokenError
from service.connectors.http import ApiError
from service.logging import configure_logging, get_logger
from service.settings import SettingsError, load_settings
from service.store import jobs, synclog
from service.store.db import Database
from service.store.migrate import upgrade_async
from tests.conftest import sample, sample_text
from tests.harness import ADMIN_TOKEN, CLIENT_STATE, WEBHOOK_KEY
from tests.security.fake_intake import fake_intake
from tests.security.inprocess import FakeWriter, TestClient, client, inprocess_app

DV, BC = "/webhooks/dataverse", "/webhooks/business-central"
PUBLIC = {"/webhooks/dataverse", "/webhooks/business-central", "/healthz", "/readyz", "/metrics"}


@pytest.fixture
def http() -> TestClient:
    return client(inprocess_app())


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bytes, bytes]]]:
    """Every secret comparison the api makes, recorded (and still made by hmac.compare_digest)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    yield calls


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every route, from the app's OpenAPI document (which FastAPI builds from
    all routes, however they are included)."""
    return [(method.upper(), path, operation) for path, item in app.openapi()["paths"].items()
            for method, operation in item.items()]


def _admin_calls(app: Any) -> list[tuple[str, str]]:
    """Every admin operation, with its path parameters filled in."""
    fill = {"{name}": "CUSTOMER", "{coupling_id}": "1", "{error_id}": "1"}
    calls = []
    for method, path, _ in _operations(app):
        if path.startswith("/admin/"):
            for placeholder, value in fill.items():
                path = path.replace(placeholder, value)
            calls.append((method, path))
    return calls


# ---- the admin API ----------------------------------------------------------------------------------------------


def test_every_route_but_the_doors_and_health_is_an_admin_route_behind_the_token() -> None:
    operations = _operations(inprocess_app())
    assert {path for _, path, _ in operations} - PUBLIC == {p for _, p, _ in operations if p.startswith("/admin/")}
    assert len(_admin_calls(inprocess_app())) >= 24  # every path of the contract, and more
    for method, path, operation in operations:
        if path.startswith("/admin/"):  # only require_admin uses the adminToken scheme
            assert operation.get("security") == [{"adminToken": []}], f"{method} {path} is not behind the token"


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", f"Basic {ADMIN_TOKEN}", f"Token {ADMIN_TOKEN}", "Bearer wrong",
    f"Bearer {ADMIN_TOKEN[:-1]}", f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN.upper()}", f"{ADMIN_TOKEN}",
    f"Bearer x{ADMIN_TOKEN}",
])
def test_admin_calls_without_the_right_bearer_token_are_refused(http: TestClient, authorization: str | None,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in _admin_calls(http.app):
        response = http.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path, response.status_code, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    out = capfd.readouterr().out
    refusals = [json.loads(line) for line in out.splitlines() if "admin request refused" in line]
    assert refusals and all(ADMIN_TOKEN not in json.dumps(r) for r in refusals)


def test_the_right_token_passes_in_any_scheme_case_and_is_compared_in_constant_time(
        http: TestClient, compared: list[tuple[bytes, bytes]]) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = http.get("/admin/mappings/NOPE", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
        assert response.status_code == 404  # past the token: the mapping does not exist
    http.get("/admin/mappings/NOPE", headers={"Authorization": "Bearer wrong-token"})
    assert compared == [(ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode())] * 3 + [(b"wrong-token", ADMIN_TOKEN.encode())]


def test_without_an_admin_token_configured_the_admin_api_is_disabled() -> None:
    http = client(inprocess_app(admin_token=None))
    for method, path in _admin_calls(http.app):
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
            assert http.request(method, path, headers=headers).status_code == 503, (method, path)


# ---- the webhook secrets ----------------------------------------------------------------------------------------


def test_the_dataverse_key_is_required_in_either_form_and_compared_in_constant_time(
        http: TestClient, compared: list[tuple[bytes, bytes]]) -> None:
    account = sample_text("dataverse-account-create.json")
    writer: FakeWriter = http.app.state.writer  # type: ignore[attr-defined]
    refused = [
        http.post(DV, content=account),
        http.post(f"{DV}?code=", content=account),
        http.post(f"{DV}?code=wrong", content=account),
        http.post(f"{DV}?code={WEBHOOK_KEY[:-1]}", content=account),
        http.post(f"{DV}?code={WEBHOOK_KEY}%20", content=account),
        http.post(DV, content=account, headers={"x-bcsync-webhook-key": "wrong"}),
        http.post(f"{DV}?code=wrong", content=account, headers={"x-bcsync-webhook-key": WEBHOOK_KEY}),
        http.post(DV, content=b"{not even json", headers={"x-bcsync-webhook-key": "wrong"}),  # key before body
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert all(r.json()["outcome"] == "unauthorized" and WEBHOOK_KEY not in r.text for r in refused)
    assert writer.events == []
    assert http.post(f"{DV}?code={WEBHOOK_KEY}", content=account).status_code == 202
    assert http.post(DV, content=account, headers={"x-bcsync-webhook-key": WEBHOOK_KEY}).status_code == 202
    assert len(writer.events) == 2
    assert compared[-2:] == [(WEBHOOK_KEY.encode(), WEBHOOK_KEY.encode())] * 2
    assert (b"wrong", WEBHOOK_KEY.encode()) in compared


def test_nothing_matches_an_unset_webhook_key_or_client_state() -> None:
    http = client(inprocess_app(dataverse_webhook_key=None, bc_client_state=None))
    assert http.post(f"{DV}?code=", content=sample_text("dataverse-account-create.json")).status_code == 401
    assert http.post(f"{DV}?code=None", content=sample_text("dataverse-account-create.json")).status_code == 401
    unset = sample("bc-notifications.json")
    for notification in unset["value"]:
        notification["clientState"] = ""
    assert http.post(BC, json=unset).status_code == 401


def test_an_empty_secret_matches_nothing(compared: list[tuple[bytes, bytes]]) -> None:
    http = client(inprocess_app(dataverse_webhook_key="", bc_client_state="", admin_token=""))
    account = sample_text("dataverse-account-create.json")
    assert http.post(DV, content=account, headers={"x-bcsync-webhook-key": ""}).status_code == 401
    assert http.post(f"{DV}?code=", content=account).status_code == 401
    blank = sample("bc-notifications.json")
    for notification in blank["value"]:
        notification["clientState"] = ""
    assert http.post(BC, json=blank).status_code == 401
    for blank in ("Bearer ", "Bearer  \t "):
        assert http.get("/admin/mappings", headers={"Authorization": blank}).status_code == 401


def test_an_empty_secret_setting_stops_the_process_at_start(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BCSYNC_DATAVERSE_WEBHOOK_KEY", "BCSYNC_BC_CLIENT_STATE", "BCSYNC_ADMIN_TOKEN"):
        monkeypatch.setenv(name, "")
        with pytest.raises(SettingsError, match=f"^bcsync: missing setting {name}$"):
            load_settings(name.removeprefix("BCSYNC_").lower())


def test_every_bc_notification_must_carry_the_client_state(http: TestClient,
                                                           compared: list[tuple[bytes, bytes]]) -> None:
    writer: FakeWriter = http.app.state.writer  # type: ignore[attr-defined]
    batch = sample("bc-notifications.json")
    for index, wrong in ((0, "wrong"), (4, CLIENT_STATE[:-1]), (2, "")):
        tampered = json.loads(json.dumps(batch))
        tampered["value"][index]["clientState"] = wrong
        response = http.post(BC, json=tampered)
        assert response.status_code == 401 and CLIENT_STATE not in response.text
    assert writer.events == []
    assert http.post(BC, json=batch).status_code == 202
    assert (CLIENT_STATE.encode(), CLIENT_STATE.encode()) in compared and (b"wrong", CLIENT_STATE.encode()) in compared


def test_a_bc_notification_without_client_state_is_dropped_and_alone_causes_nothing() -> None:
    """Not someone else's (no 401, which would cost BC's subscriptions), but not ours either: never stored;
    beside entries of ours it is covered by a catch-up, alone it causes nothing at all."""
    app = inprocess_app()
    intake = fake_intake(app)
    http = client(app)
    batch = sample("bc-notifications.json")
    del batch["value"][1]["clientState"]  # a customer
    answer = http.post(BC, json=batch)
    assert answer.status_code == 202 and answer.json()["dropped"] == 1 and answer.json()["events"] == 4
    assert intake.catch_ups == [["CUSTOMER"]] and len(intake.writer.events) == 4
    for notification in batch["value"]:
        notification.pop("clientState", None)
    alone = http.post(BC, json=batch)
    assert alone.status_code == 202 and alone.json()["outcome"] == "invalid"
    assert intake.catch_ups == [["CUSTOMER"]] and len(intake.writer.events) == 4


# ---- request size limits ----------------------------------------------------------------------------------------


ONE_MIB = 1024 * 1024  # the contract's limit, spelled out here: a test that read it from the code could not fail


def _streamed(size: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked): the limit must hold while streaming."""
    sent = 0
    while sent < size:
        chunk = b" " * min(65536, size - sent)
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize("streamed", [False, True])
def test_the_dataverse_door_refuses_a_body_over_1_mib_and_takes_one_of_exactly_1_mib(http: TestClient,
                                                                                     streamed: bool) -> None:
    body = sample_text("dataverse-account-create.json").encode()
    exactly = body + b" " * (ONE_MIB - len(body))
    over = exactly + b" "
    big = http.post(f"{DV}?code={WEBHOOK_KEY}", content=_streamed(len(over)) if streamed else over)
    assert big.status_code == 413 and big.json()["outcome"] == "invalid"
    assert http.post(f"{DV}?code={WEBHOOK_KEY}", content=exactly).status_code == 202


@pytest.mark.parametrize("streamed", [False, True])
def test_the_business_central_door_takes_a_body_over_1_mib(http: TestClient, streamed: bool) -> None:
    """BC sends every subscription's notifications in one body and deletes the subscriptions on a 413."""
    body = sample_text("bc-notifications.json").encode()
    over = body + b" " * (3 * ONE_MIB)

    def chunks() -> Iterator[bytes]:
        yield body
        yield from _streamed(3 * ONE_MIB)

    answer = http.post(BC, content=chunks() if streamed else over)
    assert answer.status_code == 202 and answer.json()["outcome"] == "accepted" and answer.json()["events"] == 5


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("token", [None, ADMIN_TOKEN])
def test_every_other_route_refuses_a_body_over_1_mib_before_reading_it_all(
        http: TestClient, streamed: bool, token: str | None) -> None:
    """FastAPI parses a route's body before its dependencies run: without a limit, an anonymous caller
    could make an admin route buffer any amount."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for method, path in (("PATCH", "/admin/mappings/CUSTOMER"), ("POST", "/admin/couplings"),
                         ("POST", "/admin/couplings/match"), ("POST", "/admin/full-sync"), ("POST", "/admin/catch-up"),
                         ("GET", "/healthz")):
        body: Any = _streamed(ONE_MIB + 1) if streamed else b" " * (ONE_MIB + 1)
        response = http.request(method, path, content=body, headers=headers)
        if response.status_code == 401 and path in ("/admin/full-sync", "/admin/catch-up"):
            continue  # these read their body only after the token was checked
        if path == "/healthz" and streamed:
            assert response.status_code == 200  # a body nobody reads is not read
            continue
        assert response.status_code == 413, (method, path, response.status_code, response.text)


def test_query_and_header_values_are_bounded(http: TestClient) -> None:
    assert http.get(BC, params={"validationToken": "a" * 4097}).status_code == 400
    long_id = {"x-ms-correlation-request-id": "c" * 129, "x-bcsync-webhook-key": WEBHOOK_KEY}
    assert http.post(DV, content=sample_text("dataverse-account-create.json"), headers=long_id).status_code == 400
    # Business Central deletes a subscription that answers 4xx: an overlong correlation id is cut, not refused.
    accepted = http.post(BC, content=sample_text("bc-notifications.json"), headers={"x-ms-correlation-id": "c" * 5000})
    assert accepted.status_code == 202, accepted.text


def test_a_failing_upstream_system_is_a_502_naming_it_without_secrets() -> None:
    app = inprocess_app()

    async def upstream(code: str) -> None:
        if code == "token":
            raise TokenError("AADSTS7000215: invalid client secret")
        raise ApiError(503, "ServiceUnavailable", "echoed https://x/?code=SeCrEt&x=1 Bearer eyJabc.def",
                       system="Dataverse")

    app.add_api_route("/boom/{code}", upstream)
    http = client(app)
    answer = http.get("/boom/api")
    assert answer.status_code == 502 and answer.json()["detail"].startswith("Dataverse 503 ServiceUnavailable")
    assert "SeCrEt" not in answer.text and "eyJabc" not in answer.text
    token = http.get("/boom/token")
    assert token.status_code == 502 and "AADSTS7000215" in token.json()["detail"]


# ---- the BC handshake -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_handshake_is_plain_text_and_never_reflects_markup(http: TestClient, method: str) -> None:
    good = http.request(method, BC, params={"validationToken": "Abc-123_x.y~z+/=:"})
    assert good.status_code == 200 and good.text == "Abc-123_x.y~z+/=:"
    assert good.headers["content-type"] == "text/plain; charset=utf-8"
    assert good.headers["x-content-type-options"] == "nosniff"
    for bad in ("<script>alert(1)</script>", "<b>", "a\"b", "x y", "\r\nX-Injected: 1", "", "&lt;"):
        refused = http.request(method, BC, params={"validationToken": bad})
        assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
        assert not (len(bad) > 1 and bad in refused.text) and "X-Injected" not in refused.headers
    assert http.get(BC).status_code == 400  # a GET is only for the handshake


# ---- secrets in logs and in error messages ----------------------------------------------------------------------


def test_secrets_are_redacted_from_logged_exceptions_and_urls(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    log = get_logger("test")
    try:
        raise RuntimeError("connect postgresql+asyncpg://bcsync:DbPassw0rd@db/x failed; url "
                           "https://h/webhooks/dataverse?code=K3y-value; header Authorization: Bearer T0ken.abc")
    except RuntimeError:
        log.exception("it failed", database_url="postgresql://u:UrlPassw0rd@h/db", note="amqp://guest:MqPass@h//")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    for secret in ("DbPassw0rd", "K3y-value", "T0ken.abc", "UrlPassw0rd", "MqPass"):
        assert secret not in line, secret
    assert "postgresql+asyncpg://bcsync:***@db/x" in record["exception"]  # what is left still helps
    assert record["note"] == "amqp://guest:***@h//"


def test_api_errors_never_carry_what_a_server_echoes_of_our_secrets() -> None:
    error = ApiError(400, "BadRequest", "invalid url https://us/webhooks/dataverse?code=Echoed-Key and "
                                        "Bearer Echoed.Token", system="Dataverse")
    assert "Echoed-Key" not in str(error) and "Echoed.Token" not in str(error) and "Dataverse 400" in str(error)


async def test_stored_error_messages_are_redacted(tmp_path: Path) -> None:
    """What GET /admin/errors and GET /admin/subscriptions show comes from the store."""
    url = f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"
    await upgrade_async(url)
    db = Database(url)
    try:
        async with db.session() as session:
            error = await synclog.record_error(session, "CUSTOMER", "dataverse", "1",
                                               "could not reach postgresql://u:Pw0rd@h/db?token=Tok3n&x=1")
            await jobs.save_subscription_state(session, "bc:x", system="bc", resource="x", status="failed",
                                               error="Business Central 401: Bearer Abc.Def rejected")
        async with db.session() as session:
            stored = (await synclog.list_errors(session, None, None, 10))[0]
            state = jobs.subscription_json((await jobs.subscription_states(session))[0])
    finally:
        await db.close()
    assert error.id == stored.id and "Pw0rd" not in stored.message and "Tok3n" not in stored.message
    assert stored.message == "could not reach postgresql://u:***@h/db?token=***&x=1"
    assert state["error"] == "Business Central 401: Bearer *** rejected"


@pytest.mark.parametrize(("name", "value"), [
    ("BCSYNC_PORT", "Secr3tValue"), ("BCSYNC_NAMESPACE", "Secr3t Value"), ("BCSYNC_RETRY_DELAYS", "Secr3tValue"),
    ("BCSYNC_DATAVERSE_URL", "https://user:Secr3tValue@not a host"), ("BCSYNC_AUTHORITY_HOST", "Secr3tValue"),
])
def test_a_settings_error_names_the_variable_not_its_value(clean_env: None, monkeypatch: pytest.MonkeyPatch,
                                                           name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value.code)
    assert name in message and "Secr3t" not in message


def test_an_api_that_cannot_start_prints_no_password(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "BCSYNC_DATAVERSE_WEBHOOK_KEY": "Hook-Secr3t", "BCSYNC_BC_CLIENT_STATE": "St-Secr3t",
           "BCSYNC_INTEGRATION_USER_ID": "0b7e9c2d-4f61-4a8e-9d3c-5e6f7a8b9c0d", "BCSYNC_ADMIN_TOKEN": "Adm-Secr3t",
           "BCSYNC_DATABASE_URL": "postgresql+asyncpg://bcsync:Db-Secr3t@127.0.0.1:1/nowhere",
           "BCSYNC_BROKER_URL": "amqp://guest:Mq-Secr3t@127.0.0.1:1/", "BCSYNC_PORT": "1"}
    result = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Connect call failed" in output  # it did fail on the database
    assert "Secr3t" not in output

