"""Test helpers: run the real api in-process over HTTP, a TCP proxy that can cut RabbitMQ, queue reads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import uvicorn
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from tests.conftest import BROKER_URL

INTEGRATION_USER = "0b7e9c2d-4f61-4a8e-9d3c-5e6f7a8b9c0d"
WEBHOOK_KEY = "test-webhook-key"
CLIENT_STATE = "s3cr3t-client-state"  # as in the BC sample
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(database_url: str, namespace: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "namespace": namespace, "broker_url": BROKER_URL,
        "dataverse_webhook_key": WEBHOOK_KEY, "bc_client_state": CLIENT_STATE,
        "integration_user_id": INTEGRATION_USER, "admin_token": ADMIN_TOKEN, "retry_delays": "1,1",
        "port": free_port(), "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_api(settings: Settings, wait_broker: bool = True) -> AsyncIterator[tuple[str, FastAPI]]:
    """The real application under uvicorn on a free port; waits until the broker is connected."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None,
                                           access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started, "the api did not start"
    if wait_broker:
        await wait_for(lambda: app.state.broker.ready, timeout=15)
    try:
        yield f"http://127.0.0.1:{settings.port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def drain(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in a queue (taken off it)."""
    queue = await channel.get_queue(queue_name, ensure=False)
    messages = []
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            return messages
        messages.append(message)


async def queue_depths(channel: aio_pika.abc.AbstractChannel, names: list[str]) -> dict[str, int]:
    depths = {}
    for name in names:
        declared = await channel.declare_queue(name, passive=True)
        depths[name] = declared.declaration_result.message_count or 0
    return depths


class TcpProxy:
    """Forwards a local port to RabbitMQ; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_port: int = 5672) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The connection a new client is forwarded to (tests/faults/cluster.py picks among several nodes)."""
        return await asyncio.open_connection("127.0.0.1", self.target_port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}

    def cut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
