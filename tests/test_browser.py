"""The nurse station in headless Chromium (Debian's build, driven by Playwright)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser_kit import browser, open_station, page, post, sign_in
from tests.conftest import Clinic, LiveServer

__all__ = ["browser", "page"]  # fixtures, imported for pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def tile(page: Page, position: int) -> str:
    return f".tile:nth-child({position})"


def test_posted_values_appear_on_their_tile(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    expect(page.locator(".tile")).to_have_count(3)
    expect(page.locator("#link-status")).to_have_text("live")
    expect(page.locator("#occupancy")).to_have_text("3/3 chairs")
    expect(page.locator("footer.notice")).to_contain_text("secondary display")

    post(live_server, clinic.device(2), ("spo2", 91, "%"), ("hr", 104, "/min"))
    second = page.locator(tile(page, 2))
    expect(second.locator('.vital[data-vital="spo2"] .value')).to_have_text("91", timeout=5000)
    expect(second.locator('.vital[data-vital="hr"] .value')).to_have_text("104")
    expect(second.locator('.vital[data-vital="spo2"]')).not_to_have_class("stale")
    # The other chairs are untouched.
    expect(page.locator(tile(page, 1)).locator('.vital[data-vital="spo2"] .value')).to_have_text(
        "---"
    )

    post(
        live_server,
        clinic.device(3),
        ("nibp_sys", 152, "mm[Hg]"),
        ("nibp_dia", 96, "mm[Hg]"),
        ("nibp_mean", 115, "mm[Hg]"),
    )
    nibp = page.locator(tile(page, 3)).locator('.vital[data-vital="nibp"]')
    expect(nibp.locator(".value")).to_have_text("152/96 (115)", timeout=5000)
    expect(nibp.locator(".age")).to_contain_text("ago")


def test_losing_the_server_raises_the_banner(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    post(live_server, clinic.device(1), ("hr", 77, "/min"))
    expect(page.locator(tile(page, 1)).locator(".value").first).to_have_text("77", timeout=5000)
    banner = page.locator("#link-banner")
    expect(banner).to_be_hidden()

    live_server.stop()
    expect(banner).to_be_visible(timeout=7000)
    expect(page.locator("#link-status")).to_have_text("NOT LIVE")
    # A value whose link is gone is no longer shown as live.
    expect(page.locator(tile(page, 1)).locator('.vital[data-vital="hr"]')).to_have_class(
        "vital stale"
    )


def test_an_alarm_shows_on_its_tile_and_its_acknowledgement_too(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    from datetime import timedelta

    open_station(page, live_server, clinic)
    expect(page.locator("#link-status")).to_have_text("live")
    end = datetime.now(UTC)
    trace = [
        {
            "vital": "spo2",
            "value": 84,
            "unit": "%",
            "device_time": (end - timedelta(seconds=2 - i)).isoformat(),
        }
        for i in range(3)
    ]
    response = httpx.post(
        f"{live_server.http_url}/api/v1/observations",
        json={"device_id": clinic.device(1), "observations": trace},
        headers=clinic.device_auth,
    )
    assert response.status_code == 201, response.text
    first = page.locator(tile(page, 1))
    expect(first).to_have_class("tile alarm-high", timeout=5000)
    line = first.locator(".alarm-line").first
    expect(line).to_contain_text("SpO2 84")
    alarm_id = line.get_attribute("data-alarm-id")
    # Someone else, elsewhere (an API client signed in as the clinician), acknowledges it.
    ack = httpx.post(
        f"{live_server.http_url}/api/v1/alarms/{alarm_id}/acknowledge",
        headers=clinic.auth("clinician"),
    )
    assert ack.status_code == 200, ack.text
    expect(first).to_have_class("tile alarm-high alarm-acknowledged", timeout=3000)
    expect(line).to_contain_text("ack clinician")


def test_the_top_bar_names_who_is_signed_in_and_signing_out_ends_it(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    station = f"{live_server.http_url}/sites/{clinic.site_id}"
    # Not signed in: the station sends the browser to the sign-in form.
    page.goto(station)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.locator("#username")).to_be_visible()

    open_station(page, live_server, clinic)
    expect(page.locator("#signed-in-as")).to_have_text("Nurse · nurse", timeout=5000)
    page.locator("#sign-out").click()
    page.wait_for_url(f"{live_server.http_url}/login")
    # The session is over: the station asks for a sign-in again, and so does the API.
    page.goto(station)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    assert page.request.get(f"{live_server.http_url}/api/v1/auth/me").status == 401

    sign_in(page, live_server, f"/sites/{clinic.site_id}", "clinician")
    expect(page.locator("#link-status")).to_have_text("live", timeout=10000)
    expect(page.locator("#signed-in-as")).to_have_text("Clinician · clinician", timeout=5000)
