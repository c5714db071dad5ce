"""Paths and loaders shared by the deployment-file tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DASHBOARD = DEPLOY / "grafana" / "bcsync-dashboard.json"
DOCKERFILE = ROOT / "Dockerfile"
CONTRACT = ROOT.parent / "shared" / "docs" / "contract.md"  # beside the clone, as on CI
README = ROOT / "README.md"


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them (no quotes or interpolation used in ours)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def setting_names() -> set[str]:
    """Every environment variable bcsync reads: the service's settings and the workers' job settings."""
    from consumers.jobs.settings import JobSettings
    from service.settings import ENV_PREFIX, Settings

    return {f"{ENV_PREFIX}{name.upper()}" for cls in (Settings, JobSettings) for name in cls.model_fields}


def check_process_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """`env` starts both the api and a worker: their own start-up checks accept it."""
    from consumers.run import WORKER_REQUIRED
    from service.runners import api_settings
    from service.settings import load_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    api_settings()
    load_settings(*WORKER_REQUIRED)
