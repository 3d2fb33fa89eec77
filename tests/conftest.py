"""Fixtures with real parts: a SQLite file, the local PostgreSQL, a real uvicorn server."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.auth import repository as auth_repository
from app.auth.passwords import hash_password
from app.auth.tokens import DEVICE_TOKEN_PREFIX, USER_TOKEN_PREFIX, new_token, token_hash
from app.settings import Settings
from app.sites.demo import seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Role, TokenKind
from app.timeutil import utcnow
from vigil.server import create_server

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "VIGIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL server the suite creates scratch databases on. Missing is a failure."""
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is required and not reachable at {POSTGRES_URL}: {exc}. "
            "Run scripts/test.sh, which starts it, or set VIGIL_TEST_POSTGRES_URL."
        )
    return POSTGRES_URL


@contextlib.contextmanager
def scratch_postgres_database(server_url: str, prefix: str = "vigil_test") -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server of `server_url`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    with scratch_postgres_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, then a scratch PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'vigil.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    migrate.upgrade(database_url, REPO / "alembic")
    return database_url


PASSWORD = "correct horse battery staple"


@functools.cache
def password_hash() -> str:
    """Argon2 is slow on purpose: hash the fixtures' one password once per run."""
    return hash_password(PASSWORD)


@dataclass(frozen=True)
class Clinic:
    """The seeded demo clinic: site, chairs bound to demo-monitor-01…, open sessions;
    a nurse, a clinician and an admin signed in (API tokens), and the site's gateway
    credential for the simulated devices."""

    url: str
    site_id: int
    chairs: int
    tokens: dict[str, str]  # username (nurse, clinician, admin) → API token
    device_token: str

    def device(self, index: int) -> str:
        return f"demo-monitor-{index:02d}"

    def auth(self, username: str = "nurse") -> dict[str, str]:
        """Headers that sign a request in as `username`."""
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    @property
    def device_auth(self) -> dict[str, str]:
        """Headers a device of the site sends with its batches."""
        return {"Authorization": f"Bearer {self.device_token}"}


def add_person(
    session: Session, username: str, role: Role, site_ids: list[int], *, active: bool = True
) -> str:
    """A user with PASSWORD and a live API token, which is returned."""
    now = utcnow()
    user = auth_repository.add_user(
        session,
        username=username,
        display_name=username.title(),
        role=role,
        password_hash=password_hash(),
        site_ids=site_ids,
        all_sites=False,
        now=now,
    )
    if not active:
        user.active = False
        session.commit()
    token = new_token(USER_TOKEN_PREFIX)
    auth_repository.add_token(
        session, user.id, TokenKind.API, token_hash(token), "tests", now, now + timedelta(days=1)
    )
    return token


def _add_credential(
    session: Session, label: str, *, device_id: int | None = None, site_id: int | None = None
) -> str:
    token = new_token(DEVICE_TOKEN_PREFIX)
    auth_repository.add_device_credential(
        session,
        hashed=token_hash(token),
        label=label,
        device_id=device_id,
        site_id=site_id,
        created_by="tests",
        now=utcnow(),
    )
    return token


def add_device_credential(session: Session, device_id: int) -> str:
    """A credential bound to one device (by its primary key); returns the token."""
    return _add_credential(session, "tests device", device_id=device_id)


def add_gateway_credential(session: Session, site_id: int) -> str:
    """A gateway credential for every device at the site; returns the token."""
    return _add_credential(session, "tests gateway", site_id=site_id)


@pytest.fixture
def clinic(migrated_url: str) -> Clinic:
    db = Database(migrated_url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs=3)
            tokens = {role.value: add_person(session, role.value, role, [site_id]) for role in Role}
            device_token = add_gateway_credential(session, site_id)
    finally:
        db.close()
    return Clinic(migrated_url, site_id, 3, tokens, device_token)


@pytest.fixture
def settings(clinic: Clinic, tmp_path: Path) -> Settings:
    return Settings(database_url=clinic.url, data_dir=tmp_path)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The server as `vigil serve` runs it: the API with the nurse station on top (the
    browser tests, the station's pages and the sign-in gate need it). Tests that start a
    server of their own with only the API use `app.main.create_app`."""
    return create_server(settings)


class LiveServer:
    """A real uvicorn server on a loopback port, in a thread of its own."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        url: str = self.app.state.settings.resolved_database_url
        return url

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    server = LiveServer(app)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
