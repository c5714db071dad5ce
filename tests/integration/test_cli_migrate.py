"""`bcsync migrate`: the schema brought up to date without starting a process (a Job before a rollout)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def migrate(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "migrate"], capture_output=True, text=True,
                          timeout=60, env={"BCSYNC_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, check=False)


def test_migrate_creates_the_schema_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "bcsync.db"
    for _ in range(2):
        done = migrate(f"sqlite+aiosqlite:///{database}")
        assert done.returncode == 0, done.stderr
        assert "database schema up to date" in done.stdout
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    assert {"outbox_event", "coupling", "alembic_version"} <= tables


def test_migrate_refuses_an_unreadable_database_url_in_one_line(tmp_path: Path) -> None:
    done = migrate("not a url")
    assert done.returncode != 0
    assert "BCSYNC_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr
