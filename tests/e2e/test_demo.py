"""`bcsync demo --once` plays the whole story on this machine and exits 0 only if every step happened."""

import os
import re
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
    out = result.stdout
    assert "9/9 steps happened" in out
    assert "Nothing echoes back" in out and "0 writes in the window" in out
    # the document flow (issue 15): submitted in Sales → in BC with its lines → posted → invoice in Sales, Invoiced
    assert re.search(r"✔ order SO\d+ in BC for customer C\d+, 2 lines: 4 CRATE of I\d+ at 49\.5, "
                     r"comment 'Gift wrapping'", out), out
    assert re.search(r"✔ invoice \S+ is in Sales with its 2 lines, total 198\.0, Billed, for the order PO-FAB-1001",
                     out), out
    assert "✔ its status is Invoiced (statecode 4, statuscode 100003)" in out
    summary = out[out.index("9/9 steps happened"):]
    for title in ("Alex submits the Sales order PO-FAB-1001", "The accountant posts the order in BC",
                  "Alex opens the order PO-FAB-1001 in Sales again"):
        assert re.search(rf"^{re.escape(title)}.*  ok  ", out, re.MULTILINE), title
    # the console's address, on the api's own port
    api_port = re.search(r"the api \(:(\d+)\)", out)
    assert api_port, out
    assert f"\nConsole: http://127.0.0.1:{api_port[1]}/console (sign in as operator@contoso.example)\n" in summary
    logs = tmp_path / ".bcsync-demo"
    assert {p.name for p in logs.glob("*.log")} == {"sandbox.log", "api.log", "worker.log"}
    assert "demo-webhook-key" not in (logs / "api.log").read_text()  # the ?code= key is never logged
