"""The NIBP interval set in the chair view, in headless Chromium: asked, confirmed, and the
tile's next-cuff countdown follows it at once."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser_kit import browser, open_station, page, post
from tests.conftest import Clinic, LiveServer

__all__ = ["browser", "page"]  # fixtures, imported for pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def test_setting_the_interval_in_the_chair_view_changes_the_next_cuff_countdown(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    tile = page.locator(".tile:nth-child(2)")  # in infusion: the protocol's 5 min
    post(
        live_server,
        clinic.device(2),
        ("nibp_sys", 128, "mm[Hg]"),
        ("nibp_dia", 80, "mm[Hg]"),
        ("nibp_mean", 96, "mm[Hg]"),
    )
    countdown = tile.locator(".next-cuff")
    expect(countdown).to_contain_text("next 4:", timeout=5000)

    tile.locator(".chair-name").click()
    select = page.locator("#nibp-interval-select")
    expect(page.locator("#chair-view")).to_be_visible()
    expect(select).to_have_value("default")
    expect(select.locator("option").first).to_have_text("protocol default (5 min)")

    # Asked first; cancelling changes nothing.
    select.select_option("60")
    page.locator("#nibp-interval-set").click()
    question = page.locator("#nibp-interval-question")
    expect(question).to_have_text(re.compile(r"NIBP every 1 min for Chair 2\?"))
    page.locator("#nibp-interval-no").click()
    expect(page.locator("#nibp-interval-confirm")).to_be_hidden()
    expect(select).to_have_value("default")
    expect(countdown).to_contain_text("next 4:")

    select.select_option("60")
    page.locator("#nibp-interval-set").click()
    page.locator("#nibp-interval-yes").click()
    expect(page.locator("#nibp-interval-result")).to_have_text("set: 1 min", timeout=5000)
    # The tile counts down from the last reading with the session's own interval now.
    expect(countdown).to_contain_text(re.compile(r"next 0:[0-5]\d"), timeout=5000)
    session_id = page.evaluate("window.vigilChair.sessionId")
    stored = httpx.get(
        f"{live_server.http_url}/api/v1/sessions/{session_id}", headers=clinic.auth(), timeout=10
    ).json()
    assert stored["nibp_interval_s"] == 60

    # No schedule: no countdown at all.
    select.select_option("0")
    page.locator("#nibp-interval-set").click()
    page.locator("#nibp-interval-yes").click()
    expect(page.locator("#nibp-interval-result")).to_have_text(
        "set: none (manual readings only)", timeout=5000
    )
    expect(countdown).to_have_text("")
