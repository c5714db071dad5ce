"""Engine and sessions: SQLite by default (WAL), PostgreSQL via BCSYNC_DATABASE_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


API_POOL = (10, 20)  # connections kept, and opened beyond them at peaks (the api's requests are short)
# One statement at most, in seconds (BCSYNC_DATABASE_TIMEOUT_SECONDS in the api): far above what any of this
# service's statements takes, so a database that hangs (a lock held, a connection that stops answering) fails
# the statement instead of holding its caller, and the unit of work rolls back.
DEFAULT_TIMEOUT = 30.0


def make_engine(url: str, pool: tuple[int, int] = API_POOL, timeout: float = DEFAULT_TIMEOUT) -> AsyncEngine:
    """`pool`: PostgreSQL's (pool_size, max_overflow). A process that knows how many sessions it runs at once
    keeps that many open: connections opened beyond pool_size are closed again after use, and each new one
    costs a TLS handshake and a fresh asyncpg connection. `timeout`: PostgreSQL's statements (asyncpg's
    command_timeout: the statement is cancelled on the server, the caller gets a TimeoutError) and connection
    attempts; SQLite's wait for its write lock (busy timeout)."""
    if is_sqlite(url):
        # One connection per process: SQLite has a single write lock anyway, and writers queueing on the
        # pool wait far less than writers sleeping in SQLite's busy handler.
        engine = create_async_engine(url, connect_args={"timeout": timeout}, pool_size=1, max_overflow=0,
                                     pool_timeout=30)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers and the writer overlap; synchronous=NORMAL in WAL mode keeps every
            # committed transaction across a process crash (only an OS crash can lose the last ones).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cursor.close()

        return engine
    size, overflow = pool
    return create_async_engine(url, pool_size=size, max_overflow=overflow, pool_pre_ping=True, pool_timeout=5,
                               connect_args={"command_timeout": timeout, "timeout": timeout})


class Database:
    def __init__(self, url: str, pool: tuple[int, int] = API_POOL, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.engine = make_engine(url, pool, timeout)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends normally, rolled back otherwise."""
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
