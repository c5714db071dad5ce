"""A client that goes away before sending its whole body: a plain log line, no traceback, nothing stored."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.harness import ADMIN_TOKEN, WEBHOOK_KEY
from tests.security.conftest import LiveApi

TARGETS = [
    ("POST", f"/webhooks/dataverse?code={WEBHOOK_KEY}", ""),
    ("POST", "/webhooks/business-central", ""),
    ("PATCH", "/admin/mappings/CUSTOMER", f"Authorization: Bearer {ADMIN_TOKEN}\r\n"),
]


@pytest.mark.parametrize(("method", "path", "extra"), TARGETS, ids=[t[1].split("?")[0] for t in TARGETS])
def test_a_body_cut_short_is_logged_as_the_client_leaving(live_api: LiveApi, method: str, path: str,
                                                          extra: str) -> None:
    live_api.new_log_events()
    address = urlsplit(live_api.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as raw:
        raw.sendall((f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}"
                     "Content-Length: 5000\r\n\r\n").encode() + b'{"PrimaryEntityName": "acc')
        time.sleep(0.2)  # the server is reading the body now
    deadline = time.monotonic() + 5
    events: list[dict] = []
    while time.monotonic() < deadline and not any(e.get("event") == "client left before its body was read"
                                                  for e in events):
        time.sleep(0.1)
        events += live_api.new_log_events()
    assert [e for e in events if e.get("level") in ("error", "critical", "raw")] == []
    assert any(e.get("event") == "client left before its body was read" and e.get("path") == path.split("?")[0]
               for e in events), events
    assert httpx.get(f"{live_api.url}/healthz").status_code == 200
