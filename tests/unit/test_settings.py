import subprocess
import sys

import pytest

from service.settings import SettingsError, load_settings


def test_defaults_are_the_contracts(clean_env: None, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = load_settings()
    assert settings.database_url == "sqlite+aiosqlite:///./bcsync.db"
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.namespace == "bcsync" and settings.host == "127.0.0.1" and settings.port == 8000
    assert str(settings.authority_host) == "https://login.microsoftonline.com/"
    assert settings.bc_environment == "production" and settings.reconcile_minutes == 30
    assert settings.bc_scope == "https://api.businesscentral.dynamics.com/.default"
    assert settings.log_level == "INFO"


def test_derived_urls(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCSYNC_TENANT_ID", "t1")
    monkeypatch.setenv("BCSYNC_DATAVERSE_URL", "https://contoso.crm.dynamics.com")
    settings = load_settings()
    assert settings.bc_service_root == "https://api.businesscentral.dynamics.com/v2.0/t1/production"
    assert settings.dataverse_api == "https://contoso.crm.dynamics.com/api/data/v9.2"
    assert settings.dataverse_token_scope == "https://contoso.crm.dynamics.com/.default"


@pytest.mark.parametrize(
    ("name", "value"),
    [("BCSYNC_PORT", "eighty"), ("BCSYNC_NAMESPACE", "has space"), ("BCSYNC_RECONCILE_MINUTES", "-1"),
     ("BCSYNC_DATAVERSE_URL", "not a url"), ("BCSYNC_LOG_LEVEL", "LOUD"), ("BCSYNC_RETRY_DELAYS", "1,x"),
     ("BCSYNC_RETRY_DELAYS", "1,5,1800"), ("BCSYNC_HANDLER_TIMEOUT_SECONDS", "3600"),
     ("BCSYNC_DATABASE_URL", "not a url"), ("BCSYNC_DATABASE_URL", "mysql://u@h/db")],
)
def test_an_invalid_setting_names_its_variable(clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str,
                                               value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value.code)
    assert message.startswith(f"bcsync: invalid setting {name}:") and "\n" not in message


def test_a_missing_required_setting_names_its_variable(clean_env: None) -> None:
    with pytest.raises(SettingsError, match=r"^bcsync: missing setting BCSYNC_ADMIN_TOKEN$"):
        load_settings("admin_token")


def test_the_api_stops_at_start_with_one_line(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "BCSYNC_DATAVERSE_WEBHOOK_KEY": "k"}
    result = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == "bcsync: missing setting BCSYNC_BC_CLIENT_STATE"
    env["BCSYNC_BC_CLIENT_STATE"] = "s"
    result = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.stderr.strip().startswith("bcsync: missing setting BCSYNC_TENANT_ID")
