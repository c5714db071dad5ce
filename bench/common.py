"""Helpers shared by the benchmarks: processes, ports, machine facts, writing docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import time
from pathlib import Path

import aio_pika

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {system}"


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=log.parent)


async def delete_namespace(broker_url: str, namespace: str, queue_names: list[str], exchanges: list[str]) -> None:
    connection = await aio_pika.connect(broker_url)
    channel = await connection.channel()
    for name in queue_names:
        try:
            await channel.queue_delete(name)
        except Exception:
            channel = await connection.channel()
    for name in exchanges:
        await channel.exchange_delete(name)
    await connection.close()


def write_section(title: str, body: str) -> None:
    """Replace (or append) the `## title` section of docs/benchmarks.md."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nFigures from `make bench` on this project's machine.\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    DOC.write_text(text.rstrip() + "\n")


async def queue_depths(broker_url: str, names: list[str]) -> dict[str, int]:
    """Messages ready in each queue (passive declare: nothing is created; a missing queue counts -1). Messages
    delivered to a consumer and not yet acknowledged are not included (at most the workers' prefetch)."""
    connection = await aio_pika.connect(broker_url)
    depths: dict[str, int] = {}
    try:
        channel = await connection.channel()
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = int(queue.declaration_result.message_count or 0)
            except Exception:  # a failed passive declare closes the channel
                depths[name] = -1
                channel = await connection.channel()
    finally:
        await connection.close()
    return depths
