"""Screenshots of the nurse station for docs/screenshots/: the grid, an alarming tile, the
chair view. Real parts throughout: `vigil serve`, `vigil simulate` and Debian's headless
Chromium (Playwright, no browser download).

    VIGIL_TEST_CHROMIUM=/usr/bin/chromium .venv/bin/python scripts/screenshots.py \
        [--chairs 30] [--warm-up-s 180] [--out docs/screenshots]

The simulated chairs run in real time for --warm-up-s first, so sparklines have a history.
Then, through the public API: chair 4 desaturates (SpO2 84, a crisis alarm that latches),
chair 9 too, its audio paused; chair 7's cuff reads 172/104 (medium alarms, acknowledged:
a reading stands until the next one, so they stay); chair 12's cuff reads 168/96 (a medium
alarm, flashing); and the last chair's monitor falls silent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from app.settings import REPO_ROOT
from app.sites.demo import device_identifier, seed_demo
from app.storage import migrate
from app.storage.db import Database

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
ACTOR = {"by": "rn.screenshots"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("vigil serve did not answer /healthz within 30 s")


def trace(vital: str, values: list[float], unit: str) -> list[dict[str, Any]]:
    end = datetime.now(UTC)
    return [
        {
            "vital": vital,
            "value": value,
            "unit": unit,
            "device_time": (end - timedelta(seconds=len(values) - 1 - i)).isoformat(),
        }
        for i, value in enumerate(values)
    ]


def post(base: str, chair: int, observations: list[dict[str, Any]]) -> None:
    response = httpx.post(
        f"{base}/api/v1/observations",
        json={"device_id": device_identifier(chair), "observations": observations},
    )
    response.raise_for_status()


def live_alarms(base: str, site_id: int, chair: int) -> list[dict[str, Any]]:
    alarms: list[dict[str, Any]] = httpx.get(
        f"{base}/api/v1/sites/{site_id}/alarms", params={"active": "true"}
    ).json()
    return [a for a in alarms if a["chair_id"] == chair and a["state"] == "raised"]


def stage_alarms(base: str, site_id: int) -> None:
    """The states a nurse should recognise: flashing, acknowledged, paused."""
    post(base, 4, trace("spo2", [86, 85, 84, 84], "%"))
    post(
        base,
        7,
        trace("nibp_sys", [172], "mm[Hg]")
        + trace("nibp_dia", [104], "mm[Hg]")
        + trace("nibp_mean", [127], "mm[Hg]"),
    )
    post(base, 9, trace("spo2", [84, 84], "%"))
    post(
        base,
        12,
        trace("nibp_sys", [168], "mm[Hg]")
        + trace("nibp_dia", [96], "mm[Hg]")
        + trace("nibp_mean", [120], "mm[Hg]"),
    )
    time.sleep(2)
    for alarm in live_alarms(base, site_id, 7):
        httpx.post(f"{base}/api/v1/alarms/{alarm['alarm_id']}/acknowledge", json=ACTOR)
    session_9 = live_alarms(base, site_id, 9)[0]["session_id"]
    httpx.post(f"{base}/api/v1/sessions/{session_9}/audio-pause", json=ACTOR)


def capture(page: Page, base: str, site_id: int, out: Path) -> None:
    page.goto(f"{base}/sites/{site_id}")
    page.wait_for_function("document.getElementById('link-status').textContent === 'live'")
    stage_alarms(base, site_id)
    page.wait_for_selector("#chair-4.alarm-high")
    page.wait_for_selector("#chair-7.alarm-acknowledged")
    page.wait_for_function("document.querySelector('#chair-9 .pause-left').textContent !== ''")
    time.sleep(6)  # a sparkline redraw, and the silent chair's "disconnected for"
    page.screenshot(path=str(out / "grid.png"))
    # Between flashes the tile looks calm; catch it in its red half-second.
    page.wait_for_function(
        "getComputedStyle(document.getElementById('chair-4')).backgroundColor === 'rgb(90, 20, 20)'"
    )
    page.locator("#chair-4").screenshot(path=str(out / "alarming-tile.png"))
    page.locator("#chair-4 .chair-name").click()
    page.wait_for_selector("#chair-view[data-loaded]:not([data-loaded=''])")
    page.wait_for_function(
        "document.querySelector('#chair-trend .js-plotly-plot')?.data?.[0]?.x?.length > 0"
    )
    time.sleep(1)
    page.screenshot(path=str(out / "chair-view.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chairs", type=int, default=30)
    parser.add_argument("--warm-up-s", type=float, default=180)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    chromium = os.environ.get("VIGIL_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("Chromium is needed: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    vigil = str(Path(sys.executable).with_name("vigil"))
    with tempfile.TemporaryDirectory(prefix="vigil-screenshots-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'vigil.sqlite'}"
        migrate.upgrade(url, REPO_ROOT / "alembic")
        db = Database(url)
        with db.session() as session:
            site_id = seed_demo(session, chairs=args.chairs)
        db.close()
        base = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "VIGIL_DATABASE_URL": url}
        port = base.rsplit(":", 1)[1]
        server = subprocess.Popen([vigil, "serve", "--port", port, "--no-upgrade"], env=env)
        simulate = None
        try:
            wait_healthy(base)
            # Every chair but the last follows `steady`; the last one's monitor sends once.
            simulate = subprocess.Popen(
                [vigil, "simulate", "--chairs", str(args.chairs - 1), "--url", base,
                 "--seed", "7", "--duration", "3600"],
                env=env,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            post(base, args.chairs, trace("spo2", [97], "%") + trace("pr", [71], "/min"))
            time.sleep(args.warm_up_s)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
                capture(page, base, site_id, args.out)
                browser.close()
        finally:
            for process in (simulate, server):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=20)
    for name in ("grid", "alarming-tile", "chair-view"):
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
