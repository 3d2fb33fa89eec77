"""Shared parts for browser tests: headless Debian Chromium via Playwright, never downloaded.

Every test opens the nurse station through `open_station`, so a sign-in step (issue 6)
has one place to go.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from app.settings import Settings
from app.storage.db import Database
from app.storage.models import Device
from station_kit import CHROMIUM_FLAGS, find_chromium
from tests.conftest import PASSWORD, Clinic, LiveServer, add_device_credential
from vigil.server import create_server


def chromium_executable() -> str:
    """Debian's Chromium, as the scripts find it; a missing browser fails the run."""
    executable = find_chromium()
    if not executable:
        pytest.fail("Chromium is required for the browser tests: apt-get install chromium")
    return executable


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's sync API holds an event loop in the main thread, and
    # must be gone before later tests call asyncio.run().
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, server: LiveServer | RestartedServer, next_path: str, user: str) -> None:
    """Sign in through the real /login form, as the clinic's fixture user `user`."""
    page.goto(f"{server.http_url}/login?next={quote(next_path)}")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.http_url}{next_path}")


def open_station(
    page: Page, server: LiveServer, clinic: Clinic, path: str = "", user: str = "nurse"
) -> Page:
    """Sign in, open the site's nurse station and wait until its link is live."""
    sign_in(page, server, f"/sites/{clinic.site_id}{path}", user)
    expect(page.locator("#link-status")).to_have_text("live", timeout=10000)
    return page


_device_tokens: dict[tuple[str, str], str] = {}


def device_auth(server: LiveServer | RestartedServer, device: str) -> dict[str, str]:
    """Headers for sending as `device`, with a credential of its own (made once)."""
    key = (server.database_url, device)
    if key not in _device_tokens:
        db = Database(server.database_url)
        try:
            with db.session() as session:
                device_id = session.scalars(
                    select(Device.id).where(Device.identifier == device)
                ).one()
                _device_tokens[key] = add_device_credential(session, device_id)
        finally:
            db.close()
    return {"Authorization": f"Bearer {_device_tokens[key]}"}


def post(
    server: LiveServer | RestartedServer, device: str, *readings: tuple[str, float, str]
) -> None:
    """Post one batch of observations for a device, stamped now."""
    stamp = datetime.now(UTC).isoformat()
    response = httpx.post(
        f"{server.http_url}/api/v1/observations",
        json={
            "device_id": device,
            "observations": [
                {"vital": vital, "value": value, "unit": unit, "device_time": stamp}
                for vital, value, unit in readings
            ],
        },
        headers=device_auth(server, device),
    )
    assert response.status_code == 201, response.text


@contextlib.contextmanager
def steady_monitors(server: LiveServer, clinic: Clinic, chairs: list[int]) -> Iterator[None]:
    """Chairs whose monitors send normal HR, SpO2 and perfusion once a second meanwhile, as
    real ones do: without them a chair left silent for 10 s raises its technical no-value
    alarms, and a slow start (a loaded machine) would make a quiet chair look alarming."""
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            for chair in chairs:
                post(server, clinic.device(chair), ("hr", 78, "/min"), ("spo2", 98, "%"))
            stop.wait(1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join()


def post_trace(
    server: LiveServer, device: str, vital: str, values: list[float], unit: str, step_s: float = 1
) -> None:
    """Post a device's recent trace in one batch, the last value stamped now."""
    end = datetime.now(UTC)
    response = httpx.post(
        f"{server.http_url}/api/v1/observations",
        json={
            "device_id": device,
            "observations": [
                {
                    "vital": vital,
                    "value": value,
                    "unit": unit,
                    "device_time": (
                        end - timedelta(seconds=step_s * (len(values) - 1 - i))
                    ).isoformat(),
                }
                for i, value in enumerate(values)
            ],
        },
        headers=device_auth(server, device),
    )
    assert response.status_code == 201, response.text


class RestartedServer:
    """A fresh server process-alike on a stopped server's port: same database, new app."""

    def __init__(self, settings: Settings, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self._socket = sock
        self._server = uvicorn.Server(
            uvicorn.Config(create_server(settings), log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.http_url = f"http://127.0.0.1:{port}"
        self.database_url = settings.resolved_database_url

    def __enter__(self) -> RestartedServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start again")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()
