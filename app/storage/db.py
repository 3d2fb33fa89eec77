"""Engines, sessions and the executors that keep blocking database work off the event loop.

Writes and reads take different paths. Writes (`Database.run`, `Database.run_held`) go to
the writer: a single thread on SQLite, which allows one writer at a time, so writes queue
in order instead of spinning in SQLite's busy handler. Reads (`Database.read`) go to a pool
of reader threads with connections of their own: in WAL mode SQLite readers run beside the
writer and beside each other, so a clinician's review of a two-hour session does not hold
up any chair's commit. Reader connections refuse to write (SQLite `query_only`, PostgreSQL
read-only transactions): a read callable that writes fails loudly instead of slipping past
the writer.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Dialect, Engine, PoolProxiedConnection, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

READERS = 4  # reader threads (and pooled reader connections) per Database
_WRITER_THREAD = "vigil-db-write"
_READER_THREAD = "vigil-db-read"
_POSTGRES_POOL = {"pool_size": 8, "max_overflow": 8, "pool_pre_ping": True}
# A database error's message must not carry the statement's values (vital values, patient
# details) into a logged traceback.
_HIDE = {"hide_parameters": True}


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for `url`; with `read_only`, one whose connections refuse every write."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **_HIDE)
        if read_only:
            event.listen(engine, "connect", _sqlite_reader_pragmas)
            event.listen(engine, "begin", _begin_snapshot)
        else:
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if read_only:
        # Repeatable read: one snapshot for the whole read, as on SQLite (never a
        # serialization failure for a transaction that only reads).
        return create_engine(
            url,
            isolation_level="REPEATABLE READ",
            execution_options={"postgresql_readonly": True},
            **_POSTGRES_POOL,
            **_HIDE,
        )
    return create_engine(url, **_POSTGRES_POOL, **_HIDE)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged sample survives a power cut, not just a crash (~0.3 ms a commit).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling would begin nothing before a SELECT, so every
    # statement of a read would see a different moment; `_begin_snapshot` begins instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lives in the file: set here too in case a reader is the first to open it.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA query_only=ON")  # last: from here on this connection cannot write
    cursor.close()


def _begin_snapshot(connection: Connection) -> None:
    """One read transaction per read: all its statements see the same committed state."""
    connection.exec_driver_sql("BEGIN")


class Database:
    """An engine for writes and one for reads, each with its own executor.

    `run` and `run_held` write (and read what must be ordered with the writes around it);
    `read` only reads. From threads other than the event loop's (the dashboard's WSGI
    threads) the same two paths are `run_blocking` and `read_session`.
    """

    def __init__(self, url: str, readers: int = READERS) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.reader_engine = make_engine(url, read_only=True)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = sessionmaker(self.reader_engine, expire_on_commit=False)
        writers = 1 if self.is_sqlite else 8
        self._writer = ThreadPoolExecutor(max_workers=writers, thread_name_prefix=_WRITER_THREAD)
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix=_READER_THREAD)
        self._held: PoolProxiedConnection | None = None  # run_held's; used on the writer only

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(session, *args)` in a fresh session on the writer; `fn` commits."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, functools.partial(self._call, fn, *args))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(session, *args)` in a fresh read-only session on the reader pool.

        Beside the writer, not behind it: what `fn` sees is everything committed when it
        began (one snapshot for the whole call), and a write from `fn` raises.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._readers, functools.partial(self._call_read, fn, *args)
        )

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        with self.sessions() as session:
            return fn(session, *args)

    def _call_read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.read_sessions() as session:
            return fn(session, *args)

    def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """`run` for a thread outside the event loop: waits for the writer to do it.

        Refused on the event loop (it would stall it) and on the writer itself (it would
        wait for itself).
        """
        if threading.current_thread().name.startswith(_WRITER_THREAD):
            raise RuntimeError("run_blocking called on the database writer: call fn directly")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("run_blocking called on the event loop: await run() instead")
        return self._writer.submit(self._call, fn, *args).result()

    def read_session(self) -> Session:
        """A read-only session in the caller's thread (the dashboard's WSGI threads)."""
        return self.read_sessions()

    async def run_held(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(driver_connection, dialect, *args)` on the writer, then commit.

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
            self._writer, functools.partial(self._call_held, fn, *args)
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
        """A writable session in the caller's thread: for the CLI, seeding and tests. The
        server writes through `run`, `run_held` and `run_blocking` instead."""
        return self.sessions()

    def close(self) -> None:
        self._writer.submit(self._release_held)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
        self.reader_engine.dispose()
