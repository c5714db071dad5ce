"""BC over real sockets: a subscription handshake and a notification reach a plain HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.sandbox.conftest import Live


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        token = parse_qs(urlsplit(self.path).query).get("validationToken")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if token:
            payload = token[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
        else:
            _Hook.received.append(json.loads(body))
            payload = b""
            self.send_response(202)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/business-central"
    server.shutdown()
    server.server_close()


def test_subscription_and_notification_over_http(live: Live, hook: str) -> None:
    headers = {"Authorization": f"Bearer {live.bc_token()}"}
    company = f"companies({live.config.company_id})"
    with httpx.Client(headers=headers, timeout=10) as http:
        sub = http.post(f"{live.bc_root}/subscriptions", json={
            "notificationUrl": hook, "resource": f"/api/v2.0/{company}/customers", "clientState": "cs"})
        assert sub.status_code == 201, sub.text
        created = http.post(f"{live.bc_root}/{company}/customers", json={"displayName": "Live"})
        assert created.status_code == 201
        deadline = time.monotonic() + 5
        while not _Hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        (entry,) = _Hook.received[0]["value"]
        assert entry["changeType"] == "created" and entry["resource"].endswith(f"customers({created.json()['id']})")
        sub_id = sub.json()["subscriptionId"]
        assert http.delete(f"{live.bc_root}/subscriptions('{sub_id}')", headers={"If-Match": "*"}).status_code == 204
