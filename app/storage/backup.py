"""Backup and restore of Vigil's database, whichever kind it is.

SQLite: SQLite's online backup API, which copies a consistent snapshot page by page while
the server goes on writing (WAL readers do not block the writer), into a single
self-contained file. PostgreSQL: `pg_dump --format=custom` and `pg_restore`, the machine's
PostgreSQL client tools. A restore goes into an empty database (or, when asked, replaces
what is there) and should be made with the server stopped.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
# What a restore reports, and the test checks, were brought back.
COUNTED_TABLES = ("samples", "alarms", "audit_events")


class BackupError(Exception):
    """A backup or restore that cannot be made, with a message for the person running it."""


@dataclass(frozen=True)
class Restored:
    revision: str | None  # the schema revision the backup was taken at
    counts: dict[str, int]  # rows per COUNTED_TABLES


def backup(database_url: str, target: Path) -> None:
    """Write a backup of the database at `database_url` to `target` (replaced if present;
    written beside it first, so a failed backup never leaves half a file under its name)."""
    url = make_url(database_url)
    target = target.resolve()
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    partial = target.with_name(f".{target.name}.partial")
    try:
        if url.get_backend_name() == "sqlite":
            _sqlite_backup(_sqlite_path(url), partial)
        elif url.get_backend_name() == "postgresql":
            _run_tool("pg_dump", ["--format=custom", f"--file={partial}"], url)
        else:
            raise BackupError(f"cannot back up a {url.get_backend_name()} database")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def restore(database_url: str, source: Path, *, replace: bool = False) -> Restored:
    """Bring the backup `source` into the database at `database_url`, which must be empty
    unless `replace`. Stop the server first."""
    url = make_url(database_url)
    kind = _backup_kind(source)
    backend = url.get_backend_name()
    if kind != backend:
        raise BackupError(
            f"{source} is a {_KIND_NAMES[kind]} backup, but the database to restore into "
            f"is {_KIND_NAMES.get(backend, backend)} ({_safe(url)})"
        )
    if _has_tables(url) and not replace:
        raise BackupError(
            f"the database {_safe(url)} is not empty; restore into an empty one, or pass "
            "--replace to overwrite it"
        )
    if backend == "sqlite":
        _sqlite_restore(source, _sqlite_path(url))
    else:
        options = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        if replace:
            options += ["--clean", "--if-exists"]
        _run_tool("pg_restore", [*options, str(source.resolve())], url)
    return _summary(url)


# --- SQLite --------------------------------------------------------------------------------


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(url.database)


def _sqlite_backup(database: Path, target: Path) -> None:
    if not database.is_file():
        raise BackupError(f"there is no SQLite database at {database}")
    source = sqlite3.connect(database)
    copy = sqlite3.connect(target)
    try:
        source.execute("PRAGMA busy_timeout=5000")
        # One step: a consistent snapshot, read under one read transaction, while the
        # server's writer carries on in the write-ahead log.
        source.backup(copy)
        # The copy is one file on its own: no write-ahead log beside it.
        copy.execute("PRAGMA journal_mode=DELETE")
        _check_integrity(copy, target)
    finally:
        copy.close()
        source.close()


def _sqlite_restore(backup_file: Path, database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{backup_file.resolve()}?mode=ro", uri=True)
    target = sqlite3.connect(database)
    try:
        _check_integrity(source, backup_file)
        target.execute("PRAGMA busy_timeout=5000")
        source.backup(target)  # through the target's own connection: its WAL stays coherent
        target.execute("PRAGMA journal_mode=WAL")  # as Vigil runs it (app.storage.db)
    finally:
        target.close()
        source.close()


def _check_integrity(connection: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise BackupError(f"{path} is damaged: {'; '.join(problems[:3])}")


# --- PostgreSQL ----------------------------------------------------------------------------


def _run_tool(tool: str, arguments: list[str], url: URL) -> None:
    """Run pg_dump or pg_restore against `url`; the password goes in the environment, never
    on the command line, where other users of the machine could read it."""
    executable = shutil.which(tool)
    if executable is None:
        raise BackupError(
            f"{tool} was not found on PATH: install the PostgreSQL client tools of the "
            "server's major version (Debian: apt-get install postgresql-client)"
        )
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    libpq = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    result = subprocess.run(
        [executable, f"--dbname={libpq}", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BackupError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")


# --- both ----------------------------------------------------------------------------------

_KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _backup_kind(source: Path) -> str:
    try:
        with source.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise BackupError(f"cannot read {source}: {error.strerror}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_DUMP_MAGIC):
        return "postgresql"
    raise BackupError(f"{source} is neither a SQLite backup nor a pg_dump custom-format file")


def _has_tables(url: URL) -> bool:
    if url.get_backend_name() == "sqlite" and not _sqlite_path(url).exists():
        return False
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return bool(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _summary(url: URL) -> Restored:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revision = (
                connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if "alembic_version" in tables
                else None
            )
            counts = {
                table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in COUNTED_TABLES
                if table in tables
            }
    finally:
        engine.dispose()
    return Restored(revision, counts)


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)
