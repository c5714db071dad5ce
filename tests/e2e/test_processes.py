"""`bcsync api` and `bcsync worker` as real processes: a webhook reaches the worker's handler."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BROKER_URL, sample_text
from tests.harness import ADMIN_TOKEN, CLIENT_STATE, INTEGRATION_USER, WEBHOOK_KEY, free_port

pytestmark = pytest.mark.e2e


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=log.parent)


def wait_for_line(log: Path, needle: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if needle in line:
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in {log}:\n{log.read_text()[-3000:]}")


def test_api_and_worker_processes_carry_an_event_with_its_correlation_id(rabbit, namespace, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")} | {
        "BCSYNC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/bcsync.db", "BCSYNC_NAMESPACE": namespace,
        "BCSYNC_BROKER_URL": BROKER_URL, "BCSYNC_DATAVERSE_WEBHOOK_KEY": WEBHOOK_KEY,
        "BCSYNC_BC_CLIENT_STATE": CLIENT_STATE, "BCSYNC_INTEGRATION_USER_ID": INTEGRATION_USER,
        "BCSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "BCSYNC_PORT": str(port), "BCSYNC_WORKER_METRICS_PORT": "0",
        # nothing listens at these: the event used here goes to a mapping without a sync rule yet
        "BCSYNC_TENANT_ID": "t", "BCSYNC_CLIENT_ID": "c", "BCSYNC_CLIENT_SECRET": "s",
        "BCSYNC_BC_COMPANY_ID": "00000000-0000-4000-8000-000000000000", "BCSYNC_DATAVERSE_URL": "http://127.0.0.1:9",
        "BCSYNC_AUTHORITY_HOST": "https://127.0.0.1:9",
    }
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    api = start(["api"], env, api_log)
    worker = start(["worker"], env, worker_log)
    try:
        wait_for_line(api_log, "broker connected")
        wait_for_line(worker_log, "worker consuming")
        response = httpx.post(f"http://127.0.0.1:{port}/webhooks/dataverse", params={"code": WEBHOOK_KEY},
                              content=sample_text("dataverse-salesorder-submitted.json"),
                              headers={"x-ms-correlation-request-id": "e2e-corr-1"}, timeout=10)
        assert response.status_code == 202
        received = wait_for_line(worker_log, '"change event received"')
        assert received["mapping"] == "SALESORDER-ORDER" and received["correlation_id"] == "e2e-corr-1"
        assert received["record_id"] == "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918"
        assert WEBHOOK_KEY not in api_log.read_text()  # the ?code= key never reaches a log line
    finally:
        for process in (api, worker):
            process.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        api.wait(20)
    wait_for_line(worker_log, "worker stopped")
