"""The CLI's admin commands call the local api (http://BCSYNC_HOST:BCSYNC_PORT), never the public ingress of
BCSYNC_PUBLIC_URL: the admin token stays on this machine unless `--url` or BCSYNC_API_URL says otherwise."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from service.cli import api_base_url, app
from service.settings import Settings

TOKEN = "cli-admin-token"
STATUS = {"broker_connected": True, "outbox_pending": 0, "mappings": []}


class Api:
    """A stand-in api on 127.0.0.1 that answers every admin call and remembers who called it with what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                calls.append((self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = json.dumps(STATUS if self.path == "/admin/status" else []).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local() -> Iterator[Api]:
    api = Api()
    yield api
    api.close()


@pytest.fixture
def public() -> Iterator[Api]:
    """What BCSYNC_PUBLIC_URL points at (in production: the ingress that Business Central and Dataverse call)."""
    api = Api()
    yield api
    api.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path, local: Api, public: Api) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("BCSYNC_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file
    return {"BCSYNC_ADMIN_TOKEN": TOKEN, "BCSYNC_HOST": "0.0.0.0", "BCSYNC_PORT": str(local.port),
            "BCSYNC_PUBLIC_URL": f"http://127.0.0.1:{public.port}"}


@pytest.mark.parametrize("args", [["status"], ["hold", "CUSTOMER"], ["resume", "all"], ["mappings"],
                                  ["errors", "--retry-all"], ["couple", "CUSTOMER", "b", "d"]])
def test_admin_commands_call_the_local_api_by_default(env: dict[str, str], local: Api, public: Api,
                                                      args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert public.calls == [], "the admin token went to the public URL"
    [(_, path, authorization)] = local.calls
    assert path.startswith("/admin/") and authorization == f"Bearer {TOKEN}"


def test_url_option_and_api_url_setting_override(env: dict[str, str], local: Api, public: Api) -> None:
    other = Api()
    try:
        result = CliRunner().invoke(app, ["status", "--url", f"http://127.0.0.1:{other.port}/"], env=env)
        assert result.exit_code == 0, result.output
        result = CliRunner().invoke(app, ["hold", "CUSTOMER"],
                                    env=env | {"BCSYNC_API_URL": f"http://127.0.0.1:{other.port}"})
        assert result.exit_code == 0, result.output
        assert [path for _, path, _ in other.calls] == ["/admin/status", "/admin/mappings/CUSTOMER/hold"]
    finally:
        other.close()
    assert local.calls == [] and public.calls == []


@pytest.mark.parametrize(("host", "expected"), [
    ("0.0.0.0", "http://127.0.0.1:8123"), ("::", "http://127.0.0.1:8123"), ("127.0.0.1", "http://127.0.0.1:8123"),
    ("10.1.2.3", "http://10.1.2.3:8123"), ("::1", "http://[::1]:8123"), ("api.internal", "http://api.internal:8123"),
])
def test_the_local_address(host: str, expected: str) -> None:
    assert api_base_url(Settings(_env_file=None, host=host, port=8123)) == expected
    assert api_base_url(Settings(_env_file=None, host=host, port=8123,
                                 api_url="https://ops.example/bcsync/")) == "https://ops.example/bcsync"


def test_the_help_names_the_local_default() -> None:
    text = CliRunner().invoke(app, ["status", "--help"], env={"COLUMNS": "200"}).output
    assert "BCSYNC_HOST" in text and "BCSYNC_PUBLIC_URL" not in text
