"""Fixtures of the deployment-file tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No BCSYNC_* variable of this machine and no .env file: only what a test sets counts."""
    for key in list(os.environ):
        if key.startswith("BCSYNC_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch
