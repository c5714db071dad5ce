"""`bcsync demo --once` plays the whole story on this machine and exits 0 only if every step happened."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_demo_story_runs_to_its_summary(rabbit, namespace: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")} | {"BCSYNC_NAMESPACE": namespace}
    result = subprocess.run([sys.executable, "-m", "service.cli", "demo", "--once"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6/6 steps happened" in result.stdout
    assert "Nothing echoes back" in result.stdout and "0 writes in the window" in result.stdout
    logs = tmp_path / ".bcsync-demo"
    assert {p.name for p in logs.glob("*.log")} == {"sandbox.log", "api.log", "worker.log"}
    assert "demo-webhook-key" not in (logs / "api.log").read_text()  # the ?code= key is never logged
