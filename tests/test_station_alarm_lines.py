"""The nurse station's alarm lines at 30 chairs: one line per parameter, every one shown (no
"+N more"), most severe first, inside its tile, and the alarming numeric in its priority
colour. Headless Chromium at 1920 × 1080, against a real server."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from app.live.messages import display_facts
from app.sites.demo import seed_demo
from app.storage.db import Database
from tests.browser_kit import browser, open_station, page, post, post_trace, steady_monitors
from tests.conftest import Clinic, LiveServer

__all__ = ["browser", "page"]  # fixtures, imported for pytest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

CHAIRS = 30
FLOOD = 2  # demo chairs 2 and 4 are infusing, so the combination rule applies there
LOADED = 4


@pytest.fixture
def clinic(clinic: Clinic) -> Clinic:
    """The demo clinic grown to 30 chairs, each with a session, before the server starts."""
    db = Database(clinic.url)
    try:
        with db.session() as session:
            seed_demo(session, chairs=CHAIRS)
    finally:
        db.close()
    return replace(clinic, chairs=CHAIRS)


def rgb(colour: str) -> str:
    """A #rrggbb colour as getComputedStyle writes it."""
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red}, {green}, {blue})"


def lines_inside_their_tile(tile: Locator) -> list[dict[str, Any]]:
    """Each alarm line's box against its tile's inner box; an empty list if all fit."""
    outside: list[dict[str, Any]] = tile.evaluate(
        """tile => {
          const box = tile.getBoundingClientRect();
          const inner = { left: box.left + tile.clientLeft, top: box.top + tile.clientTop,
                          right: box.left + tile.clientLeft + tile.clientWidth,
                          bottom: box.top + tile.clientTop + tile.clientHeight };
          return [...tile.querySelectorAll('.alarm-line')].map(line => {
            const r = line.getBoundingClientRect();
            return { text: line.textContent, left: r.left, top: r.top, right: r.right,
                     bottom: r.bottom, inner };
          }).filter(r => r.left < r.inner.left - 0.5 || r.right > r.inner.right + 0.5 ||
                         r.top < r.inner.top - 0.5 || r.bottom > r.inner.bottom + 0.5 ||
                         r.bottom - r.top < 5);
        }"""
    )
    return outside


@pytest.fixture
def loaded_monitor(live_server: LiveServer, clinic: Clinic) -> Iterator[None]:
    """Chair 4's monitor, once a second: SpO2 84 (a desaturation), HR and PR 135."""
    device = clinic.device(LOADED)
    post(live_server, device, ("nibp_sys", 196, "mm[Hg]"), ("nibp_dia", 121, "mm[Hg]"),
         ("nibp_mean", 146, "mm[Hg]"))  # fmt: skip
    # 12 s of history in one batch: the HR/PR 10 s delay has passed when it arrives.
    for vital in ("hr", "pr"):
        post_trace(live_server, device, vital, [135] * 12, "/min")
    post_trace(live_server, device, "spo2", [84, 83, 82], "%")  # the lowest: 82
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            post(live_server, device, ("spo2", 84, "%"), ("hr", 135, "/min"), ("pr", 135, "/min"))
            stop.wait(1)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join()


def test_one_line_per_parameter_every_one_inside_the_tile_at_30_chairs(
    page: Page, live_server: LiveServer, clinic: Clinic, loaded_monitor: None
) -> None:
    colours = display_facts(live_server.app.state.alarms.engine.protocol)["priority_colours"]
    with steady_monitors(live_server, clinic, [FLOOD]):
        open_station(page, live_server, clinic)
        expect(page.locator(".tile")).to_have_count(CHAIRS)

        # Issue 14's flood: one NIBP reading of 196/121 raised five alarms on one tile.
        post(live_server, clinic.device(FLOOD), ("nibp_sys", 196, "mm[Hg]"),
             ("nibp_dia", 121, "mm[Hg]"), ("nibp_mean", 146, "mm[Hg]"))  # fmt: skip
        flood = page.locator(f"#chair-{FLOOD}")
        # Most severe first: DBP (crisis), the infusion advice (high), SBP (medium; ≥ 180
        # waits for its confirming reading).
        expect(flood.locator(".alarm-line")).to_have_text(
            [
                "DBP 121 ≥ 120",
                re.compile(r"^Consider pausing the infusion: DBP 121 ≥ 1[12]0$"),
                "SBP 196 ≥ 160",
            ],
            timeout=5000,
        )
        expect(flood.locator(".tile-status")).not_to_contain_text("more")
        nibp = flood.locator(".vital[data-vital='nibp'] .value")
        expect(nibp).to_have_text("196/121 (146)")
        # The alarming numbers in their alarm's priority colour; MAP is not alarming.
        part = {v: nibp.locator(f"[data-numeric='{v}']") for v in ("nibp_sys", "nibp_dia")}
        expect(part["nibp_sys"]).to_have_css("color", rgb(colours["medium"]))
        expect(part["nibp_dia"]).to_have_css("color", rgb(colours["crisis"]))
        plain = page.evaluate(
            "getComputedStyle(document.documentElement).getPropertyValue('--nibp').trim()"
        )
        expect(nibp.locator("[data-numeric='nibp_mean']")).to_have_css("color", rgb(plain))
        assert rgb(plain) not in {rgb(c) for c in colours.values()}  # never mistaken for one
        assert lines_inside_their_tile(flood) == []

        # A heavier tile: blood pressure, SpO2, HR and PR all out of range, and the advice.
        loaded = page.locator(f"#chair-{LOADED}")
        expect(loaded.locator(".alarm-line")).to_have_count(6, timeout=5000)
        texts = loaded.locator(".alarm-line").all_text_contents()
        assert len(set(texts)) == len(texts), texts  # no line twice
        # The SpO2 line shows the live value, and the lowest reached (82) beside it.
        expect(loaded.locator(".alarm-line", has_text="SpO2")).to_have_text(
            "SpO2 84 ≤ 85 (lowest 82)"
        )
        expect(loaded.locator(".alarm-line", has_text="HR ")).to_have_text("HR 135 > 130")
        priorities = loaded.locator(".alarm-line").evaluate_all(
            "lines => lines.map(l => ['crisis', 'high', 'medium', 'low']"
            ".find(p => l.classList.contains(p)))"
        )
        order = ["crisis", "high", "medium", "low"]
        assert [order.index(p) for p in priorities] == sorted(order.index(p) for p in priorities)
        spo2 = loaded.locator(".vital[data-vital='spo2'] .value")
        expect(spo2).to_have_css("color", rgb(colours["crisis"]))
        expect(loaded.locator(".vital[data-vital='hr'] .value")).to_have_css(
            "color", rgb(colours["high"])
        )
        assert lines_inside_their_tile(loaded) == []
        assert page.locator(".alarm-more").count() == 0
