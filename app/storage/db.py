"""Engine, sessions and the executor that keeps blocking database work off the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Dialect, Engine, PoolProxiedConnection, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged sample survives a power cut, not just a crash (~0.3 ms a commit).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    """An engine plus a dedicated executor for its blocking calls.

    SQLite allows one writer at a time, so its work runs on a single thread:
    requests queue in order instead of spinning in SQLite's busy handler.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        workers = 1 if self.is_sqlite else 8
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vigil-db")
        self._held: PoolProxiedConnection | None = None  # run_held's; used on the executor only

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(session, *args)` in a fresh session on the database executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._call, fn, *args))

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        with self.sessions() as session:
            return fn(session, *args)

    async def run_held(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(driver_connection, dialect, *args)` on the database executor, then commit.

        For the sample writer alone: one caller at a time, every second per chair. The
        driver connection stays open between calls, because taking a connection from the
        pool and a Session around it cost more than the statements themselves (0.15 ms of
        1.1 ms per post, measured on the 2-core test machine; docs/PERFORMANCE.md). A
        connection found dead before anything was committed (the database restarted) is
        replaced and the call made once more; a failed commit is never repeated, since
        its outcome is unknown.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self._call_held, fn, *args)
        )

    def _call_held(self, fn: Callable[..., T], *args: Any) -> T:
        dialect: Dialect = self.engine.dialect
        for attempt in (1, 2):
            connection = self._held or self.engine.raw_connection()
            self._held = connection
            try:
                result = fn(connection.driver_connection, dialect, *args)
            except dialect.loaded_dbapi.Error as exc:
                dead = dialect.is_disconnect(exc, connection.dbapi_connection, None)
                self._drop_held()
                if dead and attempt == 1:
                    continue
                raise
            except BaseException:
                self._drop_held()
                raise
            try:
                connection.commit()
            except BaseException:
                self._drop_held()
                raise
            return result
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _drop_held(self) -> None:
        """Throw the held connection away (it is in doubt); the next call opens another."""
        connection, self._held = self._held, None
        if connection is not None:
            connection.invalidate()

    def _release_held(self) -> None:
        connection, self._held = self._held, None
        if connection is not None:
            connection.close()  # back to the pool, rolled back, for dispose() to close

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        self._executor.submit(self._release_held)
        self._executor.shutdown(wait=True)
        self.engine.dispose()
