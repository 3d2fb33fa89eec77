"""A PostgreSQL cluster of a test's own, on a port of its own, that the test may stop and start.

Outage tests stop the database under a running server. They must never stop the shared
server on 5432 that the rest of the suite uses, so they make a cluster of their own with
Debian's `initdb` and `pg_ctl` (from /usr/lib/postgresql/*/bin) in a temporary directory,
listening on 127.0.0.1 at a free port, with its socket in that directory too. `initdb`
refuses to run as root: as root, every command runs as the `postgres` user through
`runuser`.

    with ScratchPostgres.create() as cluster:
        url = cluster.create_database("vigil")
        cluster.stop()   # the outage
        cluster.start()  # and the return

`scratch_postgres` is a module-scoped fixture over it (import it into a test module).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import create_engine, text

from app.sites.demo import seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Role
from tests.conftest import REPO, Clinic, add_gateway_credential, add_person, free_port

StopMode = Literal["smart", "fast", "immediate"]


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory; a missing one fails the test."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        pytest.fail("PostgreSQL's initdb is required: apt-get install postgresql")
    return found[-1].parent


class ScratchPostgres:
    """One throwaway cluster: `create` it, `stop` and `start` it at will, `destroy` it."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.log = root / "postgres.log"
        self._bin = postgres_bin()
        self._as_postgres = os.geteuid() == 0

    @classmethod
    def create(cls) -> ScratchPostgres:
        root = Path(tempfile.mkdtemp(prefix="vigil-scratch-pg-"))
        cluster = cls(root, free_port())
        try:
            if cluster._as_postgres:
                shutil.chown(root, "postgres", "postgres")
            cluster._run(
                "initdb",
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",  # a throwaway cluster: durability across power cuts is not tested
                "--encoding=UTF8",
            )
            with (cluster.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
                conf.write(
                    f"\nport = {cluster.port}\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{root}'\n"
                    # Commits still reach the OS before they are acknowledged (a killed
                    # server loses none); only the fsync to disk is skipped, for speed.
                    "fsync = off\n"
                    "full_page_writes = off\n"
                    "max_connections = 50\n"
                    "shared_buffers = 16MB\n"
                )
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def __enter__(self) -> ScratchPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                engine = create_engine(self.admin_url)
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
                engine.dispose()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the cluster: "fast" ends every session at once (what a restart or a failover
        does to the clients), "immediate" is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        """A new empty database in the cluster; returns its URL."""
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise subprocess.CalledProcessError(
                done.returncode, command, done.stdout, f"{done.stderr}\n--- server log ---\n{log}"
            )


@pytest.fixture(scope="module")
def scratch_postgres() -> Iterator[ScratchPostgres]:
    """A cluster of this test module's own; each test makes its databases in it, and finds
    it running (a test that stopped it and failed is not left with it down)."""
    with ScratchPostgres.create() as cluster:
        yield cluster


@pytest.fixture
def running_scratch_postgres(scratch_postgres: ScratchPostgres) -> ScratchPostgres:
    if not scratch_postgres.running:
        scratch_postgres.start()
    return scratch_postgres


def seeded_clinic(url: str, chairs: int = 3) -> Clinic:
    """The demo clinic (as `tests.conftest.clinic`) migrated and seeded into `url`."""
    migrate.upgrade(url, REPO / "alembic")
    db = Database(url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs=chairs)
            tokens = {role.value: add_person(session, role.value, role, [site_id]) for role in Role}
            device_token = add_gateway_credential(session, site_id)
    finally:
        db.close()
    return Clinic(url, site_id, chairs, tokens, device_token)
