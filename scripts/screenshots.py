"""Screenshots of the nurse station for docs/screenshots/: the grid, an alarming tile, the
chair view. Real parts throughout: `vigil serve`, `vigil simulate` and Debian's headless
Chromium (Playwright, no browser download).

    VIGIL_TEST_CHROMIUM=/usr/bin/chromium .venv/bin/python scripts/screenshots.py \
        [--chairs 30] [--warm-up-s 180] [--out docs/screenshots]

Everything signs in as a real deployment would: the simulator and the silent chair's monitor
with a gateway credential (`vigil device-credential issue`), the browser through the /login
form and the staging calls with an API token, both as a nurse made with `vigil user create`.
The simulated chairs run in real time for --warm-up-s first, so sparklines have a history.
Then, through the public API: chair 4 desaturates (SpO2 84, a crisis alarm that latches),
chair 9 too, its audio paused; chair 7's cuff reads 172/104 (medium alarms, acknowledged:
a reading stands until the next one, so they stay); chair 12's cuff reads 168/96 (a medium
alarm, flashing); and the last chair's monitor falls silent.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from app.settings import REPO_ROOT
from app.sites.demo import device_identifier
from station_kit import (
    CHROMIUM_FLAGS,
    VIGIL,
    chromium_executable,
    create_nurse,
    free_port,
    issue_gateway_credential,
    scratch_site,
    sign_in,
    wait_healthy,
)

NURSE = ("rn.lee", "R. Lee")  # username, display name: shown in the top bar and "ack rn.lee"


def api_token(base: str, password: str) -> dict[str, str]:
    """Headers for the nurse's API calls, from POST /api/v1/auth/token."""
    response = httpx.post(
        f"{base}/api/v1/auth/token",
        json={"username": NURSE[0], "password": password, "label": "screenshots"},
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


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


def post(base: str, device: dict[str, str], chair: int, observations: list[dict[str, Any]]) -> None:
    """One batch from a chair's monitor, sent with the site's gateway credential."""
    response = httpx.post(
        f"{base}/api/v1/observations",
        json={"device_id": device_identifier(chair), "observations": observations},
        headers=device,
    )
    response.raise_for_status()


def live_alarms(base: str, nurse: dict[str, str], site_id: int, chair: int) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{base}/api/v1/sites/{site_id}/alarms", params={"active": "true"}, headers=nurse
    )
    response.raise_for_status()
    alarms: list[dict[str, Any]] = response.json()
    return [a for a in alarms if a["chair_id"] == chair and a["state"] == "raised"]


def stage_alarms(base: str, site_id: int, device: dict[str, str], nurse: dict[str, str]) -> None:
    """The states a nurse should recognise: flashing, acknowledged, paused."""
    post(base, device, 4, trace("spo2", [86, 85, 84, 84], "%"))
    post(
        base,
        device,
        7,
        trace("nibp_sys", [172], "mm[Hg]")
        + trace("nibp_dia", [104], "mm[Hg]")
        + trace("nibp_mean", [127], "mm[Hg]"),
    )
    post(base, device, 9, trace("spo2", [84, 84], "%"))
    post(
        base,
        device,
        12,
        trace("nibp_sys", [168], "mm[Hg]")
        + trace("nibp_dia", [96], "mm[Hg]")
        + trace("nibp_mean", [120], "mm[Hg]"),
    )
    time.sleep(2)
    for alarm in live_alarms(base, nurse, site_id, 7):
        httpx.post(
            f"{base}/api/v1/alarms/{alarm['alarm_id']}/acknowledge", headers=nurse
        ).raise_for_status()
    session_9 = live_alarms(base, nurse, site_id, 9)[0]["session_id"]
    httpx.post(
        f"{base}/api/v1/sessions/{session_9}/audio-pause", json={}, headers=nurse
    ).raise_for_status()


def capture(
    page: Page, base: str, site_id: int, device: dict[str, str], password: str, out: Path
) -> None:
    sign_in(page, base, f"/sites/{site_id}", NURSE[0], password)
    page.wait_for_function("document.getElementById('link-status').textContent === 'live'")
    page.wait_for_function("document.getElementById('signed-in-as').textContent !== ''")
    stage_alarms(base, site_id, device, api_token(base, password))
    page.wait_for_selector("#chair-4.alarm-high")
    page.wait_for_selector("#chair-7.alarm-acknowledged")
    page.wait_for_function("document.querySelector('#chair-9 .pause-left').textContent !== ''")
    time.sleep(6)  # a sparkline redraw, and the silent chair's "disconnected for"
    page.screenshot(path=str(out / "grid.png"))
    # Between flashes the tile looks calm; catch it in its red half-second.
    page.wait_for_function(
        "getComputedStyle(document.getElementById('chair-4'), '::before').opacity === '1'"
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
    chromium = chromium_executable()
    args.out.mkdir(parents=True, exist_ok=True)
    with scratch_site(args.chairs, "vigil-screenshots-") as (env, site_id):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gateway = issue_gateway_credential(env, site_id, "screenshots")
        password = create_nurse(env, site_id, *NURSE)
        device = {"Authorization": f"Bearer {gateway}"}
        server = subprocess.Popen([VIGIL, "serve", "--port", str(port), "--no-upgrade"], env=env)
        simulate = None
        try:
            wait_healthy(base, server)
            # Every chair but the last follows `steady`; the last one's monitor sends once.
            simulate = subprocess.Popen(
                [VIGIL, "simulate", "--chairs", str(args.chairs - 1), "--url", base,
                 "--seed", "7", "--duration", "3600"],
                env={**env, "VIGIL_DEVICE_TOKEN": gateway},
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            post(base, device, args.chairs, trace("spo2", [97], "%") + trace("pr", [71], "/min"))
            time.sleep(args.warm_up_s)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
                capture(page, base, site_id, device, password, args.out)
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
