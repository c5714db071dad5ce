"""The RabbitMQ connection of a process: connects in the background, publishes with confirms.

Publishing is persistent, mandatory (an unroutable message is an error, not a silent drop) and
confirmed by the broker before it counts as done. While the broker is away `ready` is False and the
outbox keeps what the webhooks accepted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, AbstractRobustConnection

from service.logging import get_logger
from service.settings import Settings
from service.topology import Topology, declare, drop_legacy_delay_queues

log = get_logger(__name__)

PUBLISH_TIMEOUT = 10.0


class BrokerUnavailable(Exception):
    """Not connected to RabbitMQ right now."""


class Broker:
    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.queues: dict[str, AbstractQueue] = {}
        self._exchanges: dict[str, AbstractExchange] = {}

    @property
    def ready(self) -> bool:
        connection = self.connection
        return (
            connection is not None and not connection.is_closed and connection.connected.is_set()
            and self.channel is not None and not self.channel.is_closed
        )

    async def connect(self) -> None:
        """One attempt: connect, open a confirming channel, declare the topology."""
        connection = await aio_pika.connect_robust(self.url, reconnect_interval=1.0, timeout=5)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self.queues = await declare(channel, self.topology)
            self._exchanges = {
                name: await channel.get_exchange(name, ensure=False)
                for name in (self.topology.events_exchange, self.topology.dead_exchange)
            }
            self._exchanges[""] = channel.default_exchange
            waiting = await drop_legacy_delay_queues(connection, self.topology)
        except BaseException:
            await connection.close()
            raise
        self.connection, self.channel = connection, channel
        log.info("broker connected", namespace=self.topology.namespace)
        if waiting:
            log.info("TTL delay queues of an earlier release still hold retries; deleted once empty",
                     queues=waiting)

    async def connect_forever(self, max_delay: float = 5.0) -> None:
        """Keep trying until connected; the robust connection takes care of later drops."""
        delay = 0.2
        while True:
            try:
                await self.connect()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("broker unreachable", error=str(exc)[:200], retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, *, message_id: str, correlation_id: str,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; raise if not routed or not confirmed."""
        if not self.ready:
            raise BrokerUnavailable("not connected to RabbitMQ")
        message = aio_pika.Message(
            body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id, correlation_id=correlation_id, headers=headers or {},
        )
        await asyncio.wait_for(
            self._exchanges[exchange].publish(message, routing_key, mandatory=True), PUBLISH_TIMEOUT
        )

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        self.connection = self.channel = None


def broker_from_settings(settings: Settings) -> Broker:
    return Broker(settings.broker_url, Topology(settings.namespace, tuple(settings.retry_delay_seconds)))
