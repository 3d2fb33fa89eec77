"""The nurse station's grid in headless Chromium: alarms, actions, sound, links, chair view."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from app.live.messages import display_facts
from app.settings import Settings
from tests.browser_kit import (
    RestartedServer,
    browser,
    open_station,
    page,
    post,
    post_trace,
    steady_monitors,
)
from tests.conftest import Clinic, LiveServer

__all__ = ["browser", "page"]  # fixtures, imported for pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

SPO2_DELAY_S = 15  # spo2_low_high and spo2_low_medium, docs/ALARMS.md


def tile(position: int) -> str:
    return f".tile:nth-child({position})"


def raise_desat(server: LiveServer, clinic: Clinic, chair: int) -> None:
    """SpO2 84 for 3 s: the zero-delay desat rule raises a crisis (shown high) at once."""
    post_trace(server, clinic.device(chair), "spo2", [84, 84, 84], "%")


def test_a_desaturation_alarms_within_two_seconds_of_its_condition_delay(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    first = page.locator(tile(1))
    # Note, in the page's clock (the same machine's), when the tile turns red.
    page.evaluate(
        """() => {
          const tile = document.querySelector('.tile:nth-child(1)');
          new MutationObserver(() => {
            if (tile.classList.contains('alarm-high') && !window.alarmSeenAt) {
              window.alarmSeenAt = Date.now();
            }
          }).observe(tile, { attributes: true, attributeFilter: ['class'] });
        }"""
    )
    stop = threading.Event()
    first_low = time.time()

    def monitor_at_1_hz() -> None:
        # SpO2 88: below 90 (high) but above the desat limit, so only the delay raises it.
        while not stop.is_set():
            post(live_server, clinic.device(1), ("spo2", 88, "%"), ("hr", 80, "/min"))
            stop.wait(1)

    sender = threading.Thread(target=monitor_at_1_hz, daemon=True)
    sender.start()
    try:
        expect(first).to_have_class("tile alarm-high", timeout=(SPO2_DELAY_S + 5) * 1000)
    finally:
        stop.set()
        sender.join()
    seen_after_s = page.evaluate("window.alarmSeenAt") / 1000 - first_low
    assert SPO2_DELAY_S <= seen_after_s <= SPO2_DELAY_S + 2, seen_after_s
    expect(first.locator(".alarm-line").first).to_contain_text("SpO2 88")
    expect(first.locator(".vital[data-vital='spo2'] .value")).to_have_text("88")


def test_acknowledging_on_one_screen_stops_the_flashing_on_another(
    browser: Browser, page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    other_context = browser.new_context(viewport={"width": 1920, "height": 1080})
    other = other_context.new_page()
    try:
        open_station(page, live_server, clinic)
        # The other screen is someone else's: the acknowledgement names who clicked.
        open_station(other, live_server, clinic, user="clinician")
        raise_desat(live_server, clinic, 2)
        here, there = page.locator(tile(2)), other.locator(tile(2))
        for screen in (here, there):
            expect(screen).to_have_class("tile alarm-high", timeout=5000)
            expect(screen.locator(".alarm-line").first).to_contain_text("SpO2 84")
        # Flashing at ~2 Hz is a CSS animation of the unacknowledged tile's overlay.
        flash = "t => getComputedStyle(t, '::before').animationName"
        assert there.evaluate(flash) == "flash-high"
        # …and it does show: within a second the overlay is fully on.
        there.page.wait_for_function(
            "() => getComputedStyle(document.querySelectorAll('.tile')[1], '::before')"
            ".opacity === '1'",
            timeout=1000,
        )

        here.locator(".ack-button").click()
        expect(there).to_have_class("tile alarm-high alarm-acknowledged", timeout=1000)
        assert there.evaluate(flash) == "none"
        expect(there.locator(".alarm-line").first).to_contain_text("ack nurse")
        expect(there.locator(".ack-button")).to_be_hidden()
        # Who did it is kept by the server: the signed-in person at the screen clicked on.
        alarms = httpx.get(
            f"{live_server.http_url}/api/v1/sites/{clinic.site_id}/alarms",
            headers=clinic.auth("clinician"),
        ).json()
        assert {a["acknowledged_by"] for a in alarms if a["chair_id"] == 2} == {"nurse"}
    finally:
        other_context.close()


def test_audio_pause_shows_its_time_left_on_every_screen_and_sound_says_so(
    browser: Browser, page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    other_context = browser.new_context(viewport={"width": 1920, "height": 1080})
    other = other_context.new_page()
    try:
        open_station(page, live_server, clinic)
        open_station(other, live_server, clinic)
        expect(page.locator("#sound-status")).to_have_text("SOUND OFF")
        page.locator("#sound-enable").click()
        expect(page.locator("#sound-enable")).to_be_hidden()
        raise_desat(live_server, clinic, 3)
        expect(page.locator("#sound-status")).to_have_text("Sounding: high", timeout=5000)
        played = page.evaluate("window.vigilSound.played")
        assert [p["level"] for p in played if not p["test"]][:1] == ["high"]
        # The other screen never enabled sound: it says so instead of staying silent.
        expect(other.locator("#sound-status")).to_have_text("SOUND OFF")

        page.locator(tile(3)).locator(".pause-button").click()
        for screen in (page, other):
            expect(screen.locator(tile(3)).locator(".pause-left")).to_contain_text(
                "audio paused 1:5", timeout=1000
            )
        expect(page.locator("#sound-status")).to_contain_text("audio paused: Chair 3 1:5")
        expect(page.locator("#sound-status")).not_to_contain_text("Sounding")
        # A screen opened during the pause learns it from the server.
        third = other_context.new_page()
        open_station(third, live_server, clinic)
        expect(third.locator(tile(3)).locator(".pause-left")).to_contain_text("audio paused 1:")
    finally:
        other_context.close()


def test_the_alarm_self_test_plays_every_pattern(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    page.locator("#sound-test").click()
    page.wait_for_function(
        "window.vigilSound.played.filter(p => p.test).length === 4", timeout=15000
    )
    levels = page.evaluate("window.vigilSound.played.filter(p => p.test).map(p => p.level)")
    assert levels == ["high", "medium", "technical", "low"]
    assert page.evaluate("window.vigilSound.context.state") == "running"


def test_filters_and_severity_sort_move_tiles_without_rebuilding_them(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    with steady_monitors(live_server, clinic, [1, 2]):
        open_station(page, live_server, clinic)
        page.evaluate("document.getElementById('chair-3').dataset.marker = 'same element'")
        raise_desat(live_server, clinic, 3)
        expect(page.locator(tile(3))).to_have_class("tile alarm-high", timeout=5000)

        page.locator("[data-filter='alarming']").click()
        expect(page.locator(".tile:not(.filtered-out)")).to_have_count(1)
        expect(page.locator("#filter-count")).to_have_text("1 of 3 shown")
        page.locator("[data-filter='alarming']").click()
        expect(page.locator(".tile:not(.filtered-out)")).to_have_count(3)

    page.locator("[data-filter='infusion']").click()  # the demo's chairs 2 and 3 infuse
    expect(page.locator(".tile:not(.filtered-out)")).to_have_count(2)
    page.locator("[data-filter='infusion']").click()

    page.select_option("#sort-order", "severity")
    orders = page.evaluate(
        "[...document.querySelectorAll('.tile')].map(t => Number(t.style.order))"
    )
    assert orders[2] < min(orders[0], orders[1]), orders
    assert page.evaluate("document.getElementById('chair-3').dataset.marker") == "same element"


def test_the_tile_shows_the_session_and_every_value_with_its_age(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    second = page.locator(tile(2))
    expect(second.locator(".phase")).to_have_text("infusion")
    expect(second.locator(".patient")).not_to_be_empty()
    expect(second.locator(".infusion-time")).to_contain_text("inf ")
    post(
        live_server,
        clinic.device(2),
        ("pr", 96, "/min"),
        ("spo2", 97, "%"),
        ("pi", 2.5, "%"),
        ("nibp_sys", 141, "mm[Hg]"),
        ("nibp_dia", 88, "mm[Hg]"),
        ("nibp_mean", 106, "mm[Hg]"),
    )
    # No ECG: the oximeter's pulse rate stands in, and says so.
    expect(second.locator(".vital[data-vital='hr'] .label")).to_have_text("PR", timeout=5000)
    expect(second.locator(".vital[data-vital='hr'] .value")).to_have_text("96")
    expect(second.locator(".signal")).to_have_text("PI 2.5")
    expect(second.locator(".vital[data-vital='nibp'] .value")).to_have_text("141/88 (106)")
    expect(second.locator(".next-cuff")).to_contain_text("next 4:")
    # The sparkline gets its first point on the next redraw (every 5 s).
    page.wait_for_function(
        "document.querySelector('#chair-2 .spark[data-spark=\"spo2\"] polyline')"
        "?.getAttribute('points').length > 0",
        timeout=7000,
    )

    post(live_server, clinic.device(2), ("spo2", 95, "%"))
    # After the device goes quiet: greyed values with their age, and how long it is silent.
    expect(second.locator(".tile-link")).to_contain_text("disconnected for 1", timeout=14000)
    expect(second.locator(".vital[data-vital='spo2']")).to_have_class("vital stale")
    expect(second.locator(".vital[data-vital='spo2'] .age")).to_contain_text(" s")
    expect(second).to_have_class(re.compile(r"\bdisconnected\b"))
    page.locator("[data-filter='disconnected']").click()
    expect(page.locator(".tile:not(.filtered-out)")).to_have_count(1)


def test_a_restarted_server_is_picked_up_again_without_a_reload(
    page: Page, live_server: LiveServer, clinic: Clinic, settings: Settings
) -> None:
    open_station(page, live_server, clinic)
    page.evaluate("window.sameDocument = true")
    port = live_server.port
    live_server.stop()
    expect(page.locator("#link-banner")).to_be_visible(timeout=5000)
    with RestartedServer(settings, port) as restarted:
        # Reconnect attempts back off (1, 2, 4 … s); the first ones may already be used up.
        expect(page.locator("#link-status")).to_have_text("live", timeout=20000)
        expect(page.locator("#link-banner")).to_be_hidden()
        response = httpx.post(
            f"{restarted.http_url}/api/v1/observations",
            json={
                "device_id": clinic.device(1),
                "observations": [
                    {
                        "vital": "hr",
                        "value": 66,
                        "unit": "/min",
                        "device_time": datetime.now(UTC).isoformat(),
                    }
                ],
            },
            headers=clinic.device_auth,
        )
        assert response.status_code == 201, response.text
        expect(page.locator(tile(1)).locator(".vital[data-vital='hr'] .value")).to_have_text(
            "66", timeout=5000
        )
        assert page.evaluate("window.sameDocument") is True
        assert page.evaluate("window.vigilLive.connects") >= 2


def test_the_chair_view_shows_the_last_hour_and_records_events(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    open_station(page, live_server, clinic)
    post_trace(live_server, clinic.device(2), "hr", [88, 90, 92, 91, 90], "/min")
    raise_desat(live_server, clinic, 2)
    expect(page.locator(tile(2))).to_have_class("tile alarm-high", timeout=5000)

    page.locator(tile(2)).locator(".chair-name").click()
    view = page.locator("#chair-view")
    expect(view).to_be_visible()
    expect(page.locator("#chair-view-title")).to_contain_text("Chair 2")
    expect(view).not_to_have_attribute("data-loaded", "", timeout=5000)
    expect(page.locator("#chair-alarms li").first).to_contain_text("SpO2 84")
    expect(page.locator("#chair-limits")).to_contain_text("SPO2≤ 90high")
    expect(page.locator("#chair-events")).to_contain_text("infusion start")
    graph = "#chair-trend .js-plotly-plot"
    page.wait_for_function(f"document.querySelector('{graph}')?.data?.[0]?.x?.length === 5")
    # The alarm is marked on the graph.
    assert page.evaluate(
        f"document.querySelector('{graph}').layout.annotations.some(a => a.text.includes('SpO2'))"
    )

    # New samples are appended to the open graph (extendData), not redrawn from the server.
    post(live_server, clinic.device(2), ("hr", 95, "/min"))
    page.wait_for_function(f"document.querySelector('{graph}').data[0].x.length === 6")

    # From here on, note every message the station receives: session events must arrive
    # as deltas for their one chair, never as a resync and a fresh snapshot of the site.
    page.evaluate(
        """() => {
          window.seenTypes = [];
          window.vigilLive.ws.addEventListener(
            'message', e => window.seenTypes.push(JSON.parse(e.data).type));
        }"""
    )
    page.locator(".event-preset", has_text="Rate 0.75 mg/kg/h").click()
    expect(page.locator("#event-result")).to_have_text("recorded: Rate 0.75 mg/kg/h")
    expect(page.locator("#chair-events li").first).to_contain_text(
        "rate 0.75 mg/kg/h", timeout=5000
    )
    page.locator("#event-note-text").fill("patient asks for music")
    page.locator(".event-preset", has_text="Add note").click()
    expect(page.locator("#chair-events li").first).to_contain_text(
        "patient asks for music", timeout=5000
    )
    stopped = httpx.post(
        f"{live_server.http_url}/api/v1/sessions/2/events",
        json={"kind": "infusion_stop"},
        headers=clinic.auth("nurse"),
    )
    assert stopped.status_code == 201, stopped.text
    expect(page.locator(tile(2)).locator(".phase")).to_have_text("recovery", timeout=5000)
    expect(page.locator("#chair-view-phase")).to_have_text("recovery")
    expect(page.locator("#chair-events li").first).to_contain_text("infusion stop", timeout=5000)
    seen = page.evaluate("window.seenTypes")
    assert seen.count("session") == 3, seen
    assert {"snapshot", "resync"}.isdisjoint(seen), seen
    session = httpx.get(
        f"{live_server.http_url}/api/v1/sessions/2", headers=clinic.auth("clinician")
    ).json()
    kinds = [(e["kind"], e["recorded_by"]) for e in session["events"]]
    assert ("rate_change", "nurse") in kinds
    assert ("note", "nurse") in kinds

    page.locator("#chair-view-close").click()
    expect(view).to_be_hidden()


def test_the_station_takes_its_display_facts_from_the_snapshot_and_fails_safe(
    page: Page, live_server: LiveServer, clinic: Clinic
) -> None:
    """Freshness, priority order, levels and colours come from the server; a value whose
    freshness the server did not give is shown stale (never live), and the page says why."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    open_station(page, live_server, clinic)
    expected = display_facts(live_server.app.state.alarms.engine.protocol)
    assert page.evaluate("window.vigilLive.display") == expected
    css_high = "getComputedStyle(document.documentElement).getPropertyValue('--high').trim()"
    assert page.evaluate(css_high) == expected["level_colours"]["high"]

    second = page.locator(tile(2))
    spo2 = second.locator(".vital[data-vital='spo2']")
    post(live_server, clinic.device(2), ("spo2", 97, "%"))
    expect(spo2.locator(".value")).to_have_text("97", timeout=5000)
    expect(spo2).not_to_have_class(re.compile(r"\bstale\b"))
    assert not [e for e in errors if e.startswith("vigil:")], errors

    page.evaluate("delete window.vigilLive.display.fresh_s.spo2")
    expect(spo2).to_have_class(re.compile(r"\bstale\b"), timeout=3000)
    assert any("fresh_s.spo2" in e for e in errors), errors
