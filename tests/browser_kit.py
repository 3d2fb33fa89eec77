"""Shared parts for browser tests: headless Debian Chromium via Playwright, never downloaded.

Every test opens the nurse station through `open_station`, so a sign-in step (issue 6)
has one place to go.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import Clinic, LiveServer

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str:
    """Debian's Chromium (or VIGIL_TEST_CHROMIUM); a missing browser fails the run."""
    executable = os.environ.get("VIGIL_TEST_CHROMIUM") or shutil.which("chromium")
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


def open_station(page: Page, server: LiveServer, clinic: Clinic, path: str = "") -> Page:
    """Open the site's nurse station and wait until its link is live."""
    page.goto(f"{server.http_url}/sites/{clinic.site_id}{path}")
    expect(page.locator("#link-status")).to_have_text("live", timeout=10000)
    return page


def post(server: LiveServer, device: str, *readings: tuple[str, float, str]) -> None:
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
    )
    assert response.status_code == 201, response.text
