"""One migration history on SQLite and PostgreSQL; times stay UTC and timezone-aware."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Dialect, select

from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Base, Site
from tests.conftest import REPO


def head() -> str | None:
    return ScriptDirectory(str(REPO / "alembic")).get_current_head()


def test_migrations_reach_head_and_match_the_models(migrated_url: str) -> None:
    assert migrate.current_revision(migrated_url) == head()
    db = Database(migrated_url)
    try:
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        db.close()
    assert diff == []


def test_downgrade_to_base_and_up_again(migrated_url: str) -> None:
    config = migrate.alembic_config(migrated_url, REPO / "alembic")
    command.downgrade(config, "base")
    assert migrate.current_revision(migrated_url) is None
    command.upgrade(config, "head")
    assert migrate.current_revision(migrated_url) == head()


def test_times_come_back_in_utc_and_timezone_aware(migrated_url: str) -> None:
    db = Database(migrated_url)
    plus_two = timezone(timedelta(hours=2))
    try:
        with db.session() as session:
            session.add(Site(name="Tz", created_at=datetime(2026, 5, 1, 12, 0, tzinfo=plus_two)))
            session.commit()
        with db.session() as session:
            stored = session.scalar(select(Site.created_at).where(Site.name == "Tz"))
    finally:
        db.close()
    assert stored == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert stored is not None
    assert stored.utcoffset() == timedelta(0)


def test_naive_times_are_refused(migrated_url: str) -> None:
    db = Database(migrated_url)
    try:
        with db.session() as session:
            session.add(Site(name="Naive", created_at=datetime(2026, 5, 1, 12, 0)))
            with pytest.raises(Exception, match="naive datetime"):
                session.commit()
    finally:
        db.close()


def test_a_failed_held_call_leaves_nothing_and_the_next_one_works(migrated_url: str) -> None:
    """`Database.run_held` commits only what returned: a call that fails half-way is rolled
    back with its connection, and the next call gets a fresh one."""

    def add_site_then_fail(connection: Any, dialect: Dialect, name: str) -> None:
        connection.cursor().execute(insert_site(dialect), {"name": name})
        raise RuntimeError("the writer failed after its insert")

    def add_site(connection: Any, dialect: Dialect, name: str) -> None:
        connection.cursor().execute(insert_site(dialect), {"name": name})

    async def run() -> None:
        with pytest.raises(RuntimeError):
            await db.run_held(add_site_then_fail, "half-written")
        await db.run_held(add_site, "whole")

    db = Database(migrated_url)
    try:
        asyncio.run(run())
        with db.session() as session:
            assert list(session.scalars(select(Site.name))) == ["whole"]
    finally:
        db.close()


def insert_site(dialect: Dialect) -> str:
    """A site insert in the driver's own parameter style (sqlite3 or psycopg)."""
    name = ":name" if dialect.name == "sqlite" else "%(name)s"
    return f"INSERT INTO sites (name, created_at) VALUES ({name}, CURRENT_TIMESTAMP)"
