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
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
NURSE = ("rn.lee", "R. Lee")  # username, display name: shown in the top bar and "ack rn.lee"


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


def vigil_cli(vigil: str, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a `vigil` admin command against the scratch database; its standard output."""
    done = subprocess.run(
        [vigil, *args], env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"vigil {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def issue_gateway_credential(vigil: str, env: dict[str, str], site_id: int) -> str:
    """A gateway credential for every device of the site; the token is the last line."""
    printed = vigil_cli(
        vigil, env, "device-credential", "issue", "--label", "screenshots", "--site", str(site_id)
    )
    return printed.strip().splitlines()[-1]


def create_nurse(vigil: str, env: dict[str, str], site_id: int) -> str:
    """The nurse who signs in; returns a new random password."""
    password = secrets.token_urlsafe(18)
    username, name = NURSE
    vigil_cli(
        vigil,
        env,
        *("user", "create", username, "--role", "nurse", "--name", name),
        *("--site", str(site_id), "--password-stdin"),
        stdin=password + "\n",
    )
    return password


def api_token(base: str, password: str) -> dict[str, str]:
    """Headers for the nurse's API calls, from POST /api/v1/auth/token."""
    response = httpx.post(
        f"{base}/api/v1/auth/token",
        json={"username": NURSE[0], "password": password, "label": "screenshots"},
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def sign_in(page: Page, base: str, next_path: str, password: str) -> None:
    """Sign the browser in through the /login form, as a nurse would."""
    page.goto(f"{base}/login?next={quote(next_path)}")
    page.fill("#username", NURSE[0])
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


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
    sign_in(page, base, f"/sites/{site_id}", password)
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
        gateway = issue_gateway_credential(vigil, env, site_id)
        password = create_nurse(vigil, env, site_id)
        device = {"Authorization": f"Bearer {gateway}"}
        port = base.rsplit(":", 1)[1]
        server = subprocess.Popen([vigil, "serve", "--port", port, "--no-upgrade"], env=env)
        simulate = None
        try:
            wait_healthy(base)
            # Every chair but the last follows `steady`; the last one's monitor sends once.
            simulate = subprocess.Popen(
                [vigil, "simulate", "--chairs", str(args.chairs - 1), "--url", base,
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
