import json

import pytest

from service.logging import configure_logging, get_logger


def test_logs_are_json_lines_and_secrets_never_appear(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    log = get_logger("test")
    log.info("calling", url="https://x.example/webhooks/dataverse?code=s3cret-key&x=1", client_secret="hunter2",
             authorization="Bearer abc.def", dedupe_key="dv:123", routing_key="dataverse.account")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "calling" and record["level"] == "info"
    assert "s3cret-key" not in line and "hunter2" not in line and "abc.def" not in line
    assert record["client_secret"] == "***" and record["authorization"] == "***"
    assert record["url"] == "https://x.example/webhooks/dataverse?code=***&x=1"
    assert record["dedupe_key"] == "dv:123" and record["routing_key"] == "dataverse.account"
