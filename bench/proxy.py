"""A tiny round-robin HTTP/1.1 reverse proxy for the scale-out benchmark.

The sandbox delivers each BC subscription and each Dataverse service endpoint to exactly one URL, as the real
systems do; in production that URL is a load balancer (a Kubernetes Service, an ingress) in front of the api
replicas. This proxy stands in for it: every request goes to the next replica in turn, so two notifications
of one record can reach two replicas at once — the case the scale-out acceptance is about. It runs in the
benchmark's own process (a few hundred microseconds of CPU per webhook, on raw asyncio streams like
bench/loadgen.py) and sits in front of the api in both variants, so the comparison is replicas against
replicas, not proxy against no proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from bench.loadgen import header, read_message

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class RoundRobinProxy:
    """Listens on 127.0.0.1:`port` and spreads requests over `upstreams` (ports on 127.0.0.1) in turn,
    keeping idle keep-alive connections to each upstream."""

    def __init__(self, upstreams: list[int]) -> None:
        self.upstreams = list(upstreams)
        self.counts: Counter[int] = Counter()  # requests forwarded per upstream port
        self.failures = 0  # requests answered 502 (no upstream answered)
        self.port = 0
        self._next = 0
        self._idle: dict[int, list[Stream]] = {}
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def route(self, upstreams: list[int]) -> None:
        """Change the replica set; idle connections to a removed replica are closed (in-flight ones finish)."""
        self.upstreams = list(upstreams)
        for port in [p for p in self._idle if p not in upstreams]:
            for _, writer in self._idle.pop(port):
                writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.route([])

    def _pick(self) -> int:
        port = self.upstreams[self._next % len(self.upstreams)]
        self._next += 1
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await read_message(reader)
                response = await self._forward(head, body)
                writer.write(response)
                await writer.drain()
                if header(head, b"connection") == b"close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client closed its keep-alive connection
        finally:
            writer.close()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        if not self.upstreams:
            self.failures += 1
            return b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        port = self._pick()
        # A pooled connection may have been closed by the replica meanwhile (idle timeout, restart): then
        # once more on a fresh connection. A request is never sent twice after a replica read it whole,
        # except when it dies before answering — webhooks are idempotent (dedupe keys), so that is harmless.
        for fresh in (False, True):
            stream = None if fresh else self._take(port)
            try:
                if stream is None:
                    stream = await asyncio.open_connection("127.0.0.1", port)
                upstream_reader, upstream_writer = stream
                upstream_writer.write(head + body)
                await upstream_writer.drain()
                response_head, response_body = await read_message(upstream_reader)
            except (OSError, asyncio.IncompleteReadError) as exc:
                if stream is not None:
                    stream[1].close()
                if fresh:
                    self.failures += 1
                    message = f"upstream {port}: {type(exc).__name__}".encode()
                    return (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: " + str(len(message)).encode()
                            + b"\r\n\r\n" + message)
                continue
            self.counts[port] += 1
            if header(response_head, b"connection") == b"close" or port not in self.upstreams:
                upstream_writer.close()
            else:
                self._idle.setdefault(port, []).append(stream)
            return response_head + response_body
        raise AssertionError("unreachable")

    def _take(self, port: int) -> Stream | None:
        pool = self._idle.get(port)
        while pool:
            stream = pool.pop()
            if not stream[1].is_closing():
                return stream
            with contextlib.suppress(Exception):
                stream[1].close()
        return None
