"""Secrets are masked in log lines at any depth: by key (clientState, client_secret, token, ... in any case and
with any separators) inside dicts, lists and tuples, and by pattern inside every string (`?code=`)."""

from __future__ import annotations

import json

import pytest

from service.logging import configure_logging, get_logger, is_secret_key, redact, redact_text


def logged(capsys: pytest.CaptureFixture[str], **fields: object) -> tuple[str, dict]:
    configure_logging("INFO")
    get_logger("test").info("something happened", **fields)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    return line, json.loads(line)


def test_nested_secrets_are_masked_by_key(capsys: pytest.CaptureFixture[str]) -> None:
    notification = {"subscriptionId": "sub-1", "clientState": "Cl1entState-Value", "resource": "companies(1)/customers"}
    body = {"value": [notification], "meta": ({"access_token": "Acc3ss.Tok3n"}, "plain")}
    headers = [("x-bcsync-webhook-key", "Hdr-K3y"), ("accept", "application/json")]
    line, record = logged(capsys, body=body, request={"headers": {"Authorization": "Basic dXNlcjpQYXNz"},
                                                      "credentials": [{"client_secret": "S3cret-Value",
                                                                       "refresh_token": "R3fresh", "code": "AuthC0de",
                                                                       "BCSYNC_ADMIN_TOKEN": "Adm1n"}]},
                          headers=[dict([h]) for h in headers], tokens=["in", "a", "list"])
    for secret in ("Cl1entState-Value", "Acc3ss.Tok3n", "Hdr-K3y", "dXNlcjpQYXNz", "S3cret-Value", "R3fresh",
                   "AuthC0de", "Adm1n"):
        assert secret not in line, secret
    assert record["body"]["value"][0] == {"subscriptionId": "sub-1", "clientState": "***",
                                          "resource": "companies(1)/customers"}
    assert record["body"]["meta"] == [{"access_token": "***"}, "plain"]
    assert record["request"]["credentials"][0] == {"client_secret": "***", "refresh_token": "***", "code": "***",
                                                   "BCSYNC_ADMIN_TOKEN": "***"}
    assert record["headers"] == [{"x-bcsync-webhook-key": "***"}, {"accept": "application/json"}]
    assert record["tokens"] == ["in", "a", "list"]  # a list of words, not a secret-named value


def test_a_url_with_a_code_query_parameter_is_masked_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://bcsync.example/webhooks/dataverse?code=abc&x=1"
    line, record = logged(capsys, url=url, calls=[{"target": url}], pair=("GET", url))
    assert "abc&" not in line
    masked = "https://bcsync.example/webhooks/dataverse?code=***&x=1"
    assert record["url"] == masked and record["calls"] == [{"target": masked}] and record["pair"] == ["GET", masked]


def test_ordinary_fields_are_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    fields = {"dedupe_key": "dv:123", "routing_key": "dataverse.account", "mapping": "CUSTOMER", "status_code": 404,
              "entity": "account", "counts": {"new": 1, "duplicates": 0}, "ids": ["a", "b"], "zipcode": "98052",
              "error": {"code_page": 1252, "reason": "not found"}, "token_count": 3, "attempt": None}
    _, record = logged(capsys, **fields)
    assert {name: record[name] for name in fields} == fields


def test_the_callers_objects_are_not_changed() -> None:
    body = {"clientState": "keep-me", "value": [{"password": "keep-me-too"}]}
    assert redact(body) == {"clientState": "***", "value": [{"password": "***"}]}
    assert body == {"clientState": "keep-me", "value": [{"password": "keep-me-too"}]}


@pytest.mark.parametrize("key", ["clientState", "client_state", "CLIENTSTATE", "client_secret", "secret", "password",
                                 "token", "access_token", "refresh_token", "Authorization", "webhook_key",
                                 "x-bcsync-webhook-key", "dataverse_webhook_key", "code", "admin_token",
                                 "BCSYNC_ADMIN_TOKEN", "bc_client_state"])
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["event", "dedupe_key", "routing_key", "status_code", "zipcode", "tokens", "mapping",
                                 "correlation_id", "key", "value", "outcome", "detail"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_secrets_in_json_or_dict_text_and_form_bodies() -> None:
    text = ('{"clientState": "Js0nState", "error": {"code": "0x80040217"}} '
            "{'client_secret': 'Py-S3cret'} grant_type=client_credentials&client_secret=F0rm&clientState=Q")
    masked = redact_text(text)
    for secret in ("Js0nState", "Py-S3cret", "F0rm", "=Q"):
        assert secret not in masked, secret
    assert '"code": "0x80040217"' in masked  # an error code in a body is no secret
