"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (cheap per request, so that the
generator is not what limits the measurement on a 2-core machine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, of answers with the expected status
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status


async def closed_loop(port: int, path: str, bodies: Callable[[], bytes], connections: int, seconds: float,
                      expect: int = 202) -> Result:
    """As fast as it goes: `connections` clients each sending the next request when the last is answered."""
    result = Result()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection = Connection(port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status = await connection.post(path, bodies())
            if status == expect:
                result.latencies.append(time.perf_counter() - started)
            else:
                result.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


async def open_loop(port: int, path: str, bodies: Callable[[], bytes], rate: float, seconds: float,
                    expect: int = 202, pool: int = 64) -> Result:
    """A fixed arrival rate (requests are sent on schedule whether or not earlier ones were answered), so
    latency includes any queueing in the server: the honest way to read p99 at a given load."""
    result = Result()
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(Connection(port))
    total = int(rate * seconds)
    start = time.perf_counter()

    async def one(scheduled: float) -> None:
        connection = await idle.get()
        try:
            status = await connection.post(path, bodies())
        finally:
            idle.put_nowait(connection)
        if status == expect:
            result.latencies.append(time.perf_counter() - scheduled)
        else:
            result.errors += 1

    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    return result
