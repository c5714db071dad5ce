"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (cheap per request, so that the
generator is not what limits the measurement on a 2-core machine)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def header(head: bytes, wanted: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == wanted:
            return value.strip().lower()
    return b""


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message (head, raw body): Content-Length or chunked (kept encoded: forwarded as is)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = _content_length(head)
    if length is not None:
        return head, await reader.readexactly(length)
    if header(head, b"transfer-encoding") == b"chunked":
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            body += size_line
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                body += await reader.readuntil(b"\r\n")  # no trailers from our peers: the closing CRLF
                return head, bytes(body)
            body += await reader.readexactly(size + 2)
    return head, b""  # no body (GET, 204, 304)


class RawHttp:
    """Keep-alive HTTP/1.1 to one local port on raw asyncio streams, at most `size` requests at once (more wait
    in a FIFO queue). The humans' load goes through this, not httpx: with hundreds of requests in flight (an
    open-loop schedule against a sandbox slowed by a busy machine) httpx's pool spent this process's CPU on
    bookkeeping per waiting request, starving the event loop — and with it the listeners that time the writes."""

    def __init__(self, port: int, size: int = 48) -> None:
        self.port = port
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)  # a slot without a connection yet

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        message = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
                   f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        stream = await self.idle.get()
        try:
            # a kept-alive connection the server closed meanwhile fails at once: then once on a fresh one
            for fresh in (stream is None, True):
                if fresh or stream is None:
                    stream = await asyncio.open_connection("127.0.0.1", self.port)
                try:
                    stream[1].write(message)
                    await stream[1].drain()
                    head, answer = await read_message(stream[0])
                    break
                except (OSError, asyncio.IncompleteReadError):
                    stream[1].close()
                    stream = None
                    if fresh:
                        raise
            else:  # pragma: no cover - the loop always breaks or raises
                raise AssertionError("unreachable")
            if b"connection: close" in head.lower():
                stream[1].close()
                stream = None
            return int(head.split(b" ", 2)[1]), answer
        except BaseException:
            if stream is not None:
                stream[1].close()
            stream = None
            raise
        finally:
            self.idle.put_nowait(stream)
