"""The worker returns freed heap memory to the system on a timer (consumers/memory.py)."""

from __future__ import annotations

import asyncio
import ctypes
import platform

import pytest

from consumers.memory import glibc_trim, trim_memory


async def test_the_trim_runs_every_interval_and_never_when_off() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    task = asyncio.create_task(trim_memory(0.01, trim))
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(calls) >= 3 and set(calls) == {0}
    await trim_memory(0, trim)  # returns at once
    assert len(calls) < 20


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_trim_gives_back_freed_memory_that_glibc_kept() -> None:
    trim = glibc_trim()
    assert trim is not None
    trim(0)
    blocks = [ctypes.create_string_buffer(4000) for _ in range(20_000)]  # ~80 MB through malloc's main heap
    pins = blocks[::200]  # a few blocks stay in use, scattered: glibc cannot shrink the heap from its top
    del blocks
    kept = resident_mb()
    assert trim(0) == 1
    assert kept - resident_mb() > 40, "malloc_trim gave back less than half of the freed 80 MB"
    assert len(pins) == 100
