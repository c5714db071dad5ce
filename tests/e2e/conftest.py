"""Fixtures of the end-to-end tests: a running Stack (sandbox + api + workers as real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Stack, StackFactory


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """`await make_stack(workers=2, database_url=postgres_url, env={...})`: started stacks, stopped after."""
    stacks: list[Stack] = []

    async def make(**options: Any) -> Stack:
        stack = Stack(tmp_path / f"stack-{len(stacks) + 1}", **options)
        stacks.append(stack)
        await stack.start()
        return stack

    yield make
    for stack in reversed(stacks):
        await stack.stop()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    """The whole system with one worker on a fresh SQLite database (webhooks not registered yet)."""
    return await make_stack()


@pytest.fixture
async def pg_stack(make_stack: StackFactory, postgres_url: str) -> Stack:
    """The same on a fresh PostgreSQL database."""
    return await make_stack(database_url=postgres_url)
