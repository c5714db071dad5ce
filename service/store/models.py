"""Tables of the store (SQLModel). Schema changes go through Alembic migrations in `migrations/`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text
from sqlmodel import Field, SQLModel


def _utc() -> Column:
    return Column(DateTime(timezone=True), nullable=True)


class OutboxEvent(SQLModel, table=True):
    """A change event accepted by a webhook: stored before the 202, relayed to RabbitMQ after.

    `dedupe_key` is unique, so the same delivery stored twice is one row (and one message). Rows stay
    `dedupe_days` after publication, which is the window in which repeated deliveries are recognised.
    """

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_pending", "published_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=200, unique=True)
    routing_key: str = Field(max_length=200)
    source: str = Field(max_length=32)
    entity: str = Field(max_length=128)
    correlation_id: str = Field(max_length=128)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    published_at: datetime | None = Field(default=None, sa_column=_utc())
    claimed_until: datetime | None = Field(default=None, sa_column=_utc())
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)
