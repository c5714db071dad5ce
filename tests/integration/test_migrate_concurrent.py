"""Processes starting together on one new SQLite file (an api and a worker) migrate one after the other."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from service.store.migrate import upgrade


def test_three_processes_migrating_one_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate processes start
    for attempt in range(3):
        url = f"sqlite+aiosqlite:///{tmp_path}/bcsync-{attempt}.db"
        processes = [context.Process(target=upgrade, args=(url,)) for _ in range(3)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0, 0, 0]  # without the lock: "table ... already exists"
