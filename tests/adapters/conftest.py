"""Fixtures for adapter tests: a real server with its adapters, and real clients."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import hl7  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import select

from app.adapters.events import AdapterEvent, ConnectionState, DeviceAlert, LinkEvent
from app.adapters.runtime import AdapterRuntime
from app.main import create_app
from app.settings import Settings
from app.sites.demo import seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Device, Role, Sample
from tests.conftest import REPO, Clinic, LiveServer, add_gateway_credential, add_person

# The vendor messages in shared/ beside the repository (CI lays a copy there too); the
# workplace's own copy when the checkout stands elsewhere.
HL7_SAMPLES = next(
    (
        candidate
        for candidate in (REPO.parent / "shared/data/hl7", Path("/work/shared/data/hl7"))
        if candidate.is_dir()
    ),
    REPO.parent / "shared/data/hl7",
)
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"


def make_sqlite_clinic(directory: Path) -> Clinic:
    """The demo clinic (3 chairs, demo-monitor-01..03) in a SQLite file, with its signed-in
    nurse, clinician and admin and its gateway credential, as `clinic` has them.

    Transport tests use SQLite only; the registry's SQL runs on both databases.
    """
    url = f"sqlite:///{directory / 'data' / 'vigil.sqlite'}"
    migrate.upgrade(url, REPO / "alembic")
    db = Database(url)
    try:
        with db.session() as session:
            site_id = seed_demo(session, chairs=3)
            tokens = {role.value: add_person(session, role.value, role, [site_id]) for role in Role}
            device_token = add_gateway_credential(session, site_id)
    finally:
        db.close()
    return Clinic(url, site_id, 3, tokens, device_token)


@pytest.fixture
def sqlite_clinic(tmp_path: Path) -> Clinic:
    return make_sqlite_clinic(tmp_path)


@dataclass
class Recorder:
    """Collects adapter events, from the server's thread, for the test's thread to read."""

    events: list[AdapterEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: AdapterEvent) -> None:
        with self._lock:
            self.events.append(event)

    def links(self, device: str | None = None) -> list[LinkEvent]:
        with self._lock:
            return [
                e
                for e in self.events
                if isinstance(e, LinkEvent) and (device is None or e.device_identifier == device)
            ]

    def alerts(self) -> list[DeviceAlert]:
        with self._lock:
            return [e for e in self.events if isinstance(e, DeviceAlert)]

    def wait_for_link(self, device: str, state: ConnectionState, timeout: float = 5.0) -> LinkEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.links(device) if e.state is state]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {state.value} event for {device}: {self.links()}")


@dataclass
class AdapterServer:
    """A real uvicorn server with the configured adapters running inside it."""

    live: LiveServer
    runtime: AdapterRuntime
    recorder: Recorder
    clinic: Clinic

    @property
    def http_url(self) -> str:
        return self.live.http_url

    @property
    def ws_url(self) -> str:
        return self.live.ws_url

    def adapter_port(self, name: str) -> int:
        adapter = next(a for a in self.runtime.adapters if a.name == name)
        port = getattr(adapter, "port", None)
        assert isinstance(port, int), f"adapter {name} is not listening"
        return port

    def register(self, identifier: str, chair_id: int | None = None, kind: str = "gateway") -> None:
        response = httpx.post(
            f"{self.http_url}/api/v1/devices",
            json={"identifier": identifier, "kind": kind, "chair_id": chair_id},
            headers=self.clinic.auth("admin"),
            timeout=10,
        )
        assert response.status_code == 201, response.text

    def issue_credential(self, device: str) -> tuple[int, str]:
        """A credential bound to `device` alone, issued by the admin: (its id, the token)."""
        response = httpx.post(
            f"{self.http_url}/api/v1/device-credentials",
            json={"label": f"tests {device}", "device_id": device},
            headers=self.clinic.auth("admin"),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return int(body["id"]), str(body["token"])

    def revoke_credential(self, credential_id: int) -> None:
        response = httpx.delete(
            f"{self.http_url}/api/v1/device-credentials/{credential_id}",
            headers=self.clinic.auth("admin"),
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def chair_ids(self) -> list[int]:
        site = httpx.get(
            f"{self.http_url}/api/v1/sites/{self.clinic.site_id}",
            headers=self.clinic.auth("nurse"),
            timeout=10,
        )
        assert site.status_code == 200, site.text
        return [chair["id"] for chair in site.json()["chairs"]]


def start_adapter_server(
    clinic: Clinic, tmp_path: Path, env: dict[str, str]
) -> Generator[AdapterServer, None, None]:
    """Run the server with `env` set while it is created (adapters read VIGIL_* there)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        app = create_app(Settings(database_url=clinic.url, data_dir=tmp_path))
    runtime: AdapterRuntime = app.state.adapters
    recorder = Recorder()
    runtime.events.subscribe(recorder)
    live = LiveServer(app)
    live.start()
    try:
        yield AdapterServer(live, runtime, recorder, clinic)
    finally:
        live.stop()


MLLP_ENV = {
    "VIGIL_ADAPTERS": "mllp",
    "VIGIL_MLLP_HOST": "127.0.0.1",
    "VIGIL_MLLP_PORT": "0",
    "VIGIL_MLLP_TIMEZONE": "UTC",
}


@pytest.fixture
def mllp_server(sqlite_clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    """The server with the MLLP listener on an ephemeral loopback port; naive times are UTC."""
    yield from start_adapter_server(sqlite_clinic, tmp_path, MLLP_ENV)


@pytest.fixture(scope="module")
def shared_mllp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdapterServer]:
    """One MLLP server for a whole test module: tests use devices of their own."""
    directory = tmp_path_factory.mktemp("mllp")
    yield from start_adapter_server(make_sqlite_clinic(directory), directory, MLLP_ENV)


def device_times(server: AdapterServer, device: str) -> list[datetime]:
    """Device times of every sample stored from `device`, in insertion order."""
    db = Database(server.clinic.url)
    try:
        with db.session() as session:
            return list(
                session.scalars(
                    select(Sample.device_time)
                    .join(Device, Sample.device_id == Device.id)
                    .where(Device.identifier == device)
                    .order_by(Sample.id)
                )
            )
    finally:
        db.close()


def stored(server: AdapterServer, device: str) -> list[tuple[str, float, int]]:
    """(vital, value, quality) of every sample stored from `device`, in insertion order."""
    db = Database(server.clinic.url)
    try:
        with db.session() as session:
            rows = session.execute(
                select(Sample.vital, Sample.value, Sample.quality)
                .join(Device, Sample.device_id == Device.id)
                .where(Device.identifier == device)
                .order_by(Sample.id)
            ).all()
            return [(vital, value, quality) for vital, value, quality in rows]
    finally:
        db.close()


class MllpClient:
    """A blocking MLLP client on a real socket: sends frames, reads whole ACK frames."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: bytes | str) -> bytes:
        """Frame and send one message; return the ACK message (without framing)."""
        payload = message.encode() if isinstance(message, str) else message
        self.send_raw(START_BLOCK + payload + END_BLOCK)
        return self.read_frame()

    def read_frame(self) -> bytes:
        while END_BLOCK not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the server; unread: {self._buffer!r}")
            self._buffer += chunk
        frame, self._buffer = self._buffer.split(END_BLOCK, 1)
        assert frame.startswith(START_BLOCK), frame
        return frame[1:]


def ack_fields(ack: bytes) -> tuple[str, str, str]:
    """MSA-1 (code), MSA-2 (the acknowledged MSH-10), and the text: ERR-8 if any, else MSA-3."""
    charset = "latin-1" if b"|8859/1" in ack.split(b"\r", 1)[0] else "utf-8"
    message = hl7.parse(ack.decode(charset))
    msa = message.segment("MSA")
    text = msa.extract_field(1, 3, 1, 1, 1)
    with contextlib.suppress(KeyError):
        text = message.segment("ERR").extract_field(1, 8, 1, 1, 1)
    return str(msa[1][0]), msa.extract_field(1, 2, 1, 1, 1), text


BROKER = ("127.0.0.1", 1883)
MOSQUITTO = ["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"]


def broker_up() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mosquitto() -> None:
    """The local Mosquitto on 127.0.0.1:1883, started if it is not running. Missing fails."""
    if broker_up():
        return
    try:
        subprocess.run(MOSQUITTO, check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"Mosquitto is required on {BROKER} and could not be started: {exc}")
    deadline = time.monotonic() + 10
    while not broker_up():
        if time.monotonic() > deadline:
            pytest.fail(f"started {' '.join(MOSQUITTO)}, but nothing listens on {BROKER}")
        time.sleep(0.1)
