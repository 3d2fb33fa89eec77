"""The nurse station in a real browser: main-thread CPU, JS heap and receipt → tile latency.

A real server (`vigil serve`) with a seeded site of N chairs, `vigil simulate` posting every
chair at 1 Hz through the HTTP door, and Debian's headless Chromium (Playwright, no browser
download) showing the site. Every interval it reads Chrome's own counters over CDP
(`Performance.getMetrics`: TaskDuration is the main thread's busy time) and the page's
receipt → tile latencies: for each `samples` message, the server's `received_time` to the
animation frame that paints the new value, on the server's clock (vigil-live.js keeps the
offset). As in a real deployment the simulator sends with a gateway credential for the site
(`vigil device-credential issue`) and the browser signs in through the /login form as a
nurse made with `vigil user create`.

    python bench/bench_station.py [--minutes 30] [--chairs 30] [--interval-s 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from playwright.sync_api import CDPSession, Page, sync_playwright

from app.settings import REPO_ROOT
from app.sites.demo import seed_demo
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
WARM_UP_S = 300.0
NURSE = "rn.bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("vigil serve exited early")
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
        vigil, env, "device-credential", "issue", "--label", "bench", "--site", str(site_id)
    )
    return printed.strip().splitlines()[-1]


def create_nurse(vigil: str, env: dict[str, str], site_id: int) -> str:
    """The nurse whose browser watches the site; returns a new random password."""
    password = secrets.token_urlsafe(18)
    vigil_cli(
        vigil,
        env,
        *("user", "create", NURSE, "--role", "nurse", "--site", str(site_id), "--password-stdin"),
        stdin=password + "\n",
    )
    return password


def sign_in(page: Page, base: str, next_path: str, password: str) -> None:
    """Sign the browser in through the /login form, as a nurse would."""
    page.goto(f"{base}/login?next={quote(next_path)}")
    page.fill("#username", NURSE)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


def metrics(cdp: CDPSession) -> dict[str, float]:
    answer = cdp.send("Performance.getMetrics")
    return {m["name"]: float(m["value"]) for m in answer["metrics"]}


def heap_after_gc(cdp: CDPSession) -> float:
    """Used JS heap after a full collection: what the page really keeps."""
    cdp.send("HeapProfiler.collectGarbage")
    return metrics(cdp)["JSHeapUsedSize"]


def take_latencies(page: Page) -> list[float]:
    taken: list[float] = page.evaluate("window.vigilLive.takeLatencies()")
    return taken


def run(minutes: float, chairs: int, interval_s: float) -> dict[str, Any]:
    vigil = str(Path(sys.executable).with_name("vigil"))
    chromium = os.environ.get("VIGIL_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("Chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="vigil-bench-station-") as scratch:
        url = f"sqlite:///{Path(scratch) / 'vigil.sqlite'}"
        migrate.upgrade(url, REPO_ROOT / "alembic")
        db = Database(url)
        with db.session() as session:
            site_id = seed_demo(session, chairs=chairs)
        db.close()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "VIGIL_DATABASE_URL": url}
        gateway = issue_gateway_credential(vigil, env, site_id)
        password = create_nurse(vigil, env, site_id)
        server = subprocess.Popen([vigil, "serve", "--port", str(port), "--no-upgrade"], env=env)
        simulate = None
        try:
            wait_healthy(base, server)
            simulate = subprocess.Popen(
                [
                    vigil,
                    "simulate",
                    "--chairs",
                    str(chairs),
                    "--url",
                    base,
                    "--seed",
                    "7",
                    "--duration",
                    str(int(minutes * 60 + 600)),
                ],
                env={**env, "VIGIL_DEVICE_TOKEN": gateway},
                stdout=subprocess.DEVNULL,
            )
            return measure(base, site_id, password, chromium, minutes, chairs, interval_s)
        finally:
            for process in (simulate, server):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=20)


def measure(
    base: str,
    site_id: int,
    password: str,
    chromium: str,
    minutes: float,
    chairs: int,
    interval_s: float,
) -> dict[str, Any]:
    rows: list[dict[str, float]] = []
    latencies_after_warm_up: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
        sign_in(page, base, f"/sites/{site_id}", password)
        page.wait_for_function("document.querySelectorAll('.tile').length > 0")
        page.wait_for_function("document.getElementById('link-status').textContent === 'live'")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        start = time.monotonic()
        previous = metrics(cdp)
        previous_at = start
        print(
            f"{'t min':>6} {'busy %':>7} {'script %':>8} {'layout %':>8} {'style %':>7} "
            f"{'heap MB':>8} {'nodes':>6} {'msgs':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}",
            flush=True,
        )
        while time.monotonic() - start < minutes * 60:
            time.sleep(interval_s)
            now = time.monotonic()
            current = metrics(cdp)
            latencies = take_latencies(page)
            heap = heap_after_gc(cdp)
            wall = now - previous_at
            row = {
                "t_s": now - start,
                "busy_pct": 100 * (current["TaskDuration"] - previous["TaskDuration"]) / wall,
                "script_pct": 100 * (current["ScriptDuration"] - previous["ScriptDuration"]) / wall,
                "layout_pct": 100 * (current["LayoutDuration"] - previous["LayoutDuration"]) / wall,
                "style_pct": 100
                * (current["RecalcStyleDuration"] - previous["RecalcStyleDuration"])
                / wall,
                "heap_mb": heap / 1e6,
                "nodes": current["Nodes"],
                "messages": len(latencies),
                "p50_ms": percentile(latencies, 50) if latencies else float("nan"),
                "p95_ms": percentile(latencies, 95) if latencies else float("nan"),
                "max_ms": max(latencies) if latencies else float("nan"),
            }
            rows.append(row)
            if row["t_s"] > WARM_UP_S:
                latencies_after_warm_up += latencies
            print(
                f"{row['t_s'] / 60:6.1f} {row['busy_pct']:7.2f} {row['script_pct']:8.2f} "
                f"{row['layout_pct']:8.2f} {row['style_pct']:7.2f} {row['heap_mb']:8.2f} "
                f"{row['nodes']:6.0f} {row['messages']:6d} "
                f"{row['p50_ms']:7.1f} {row['p95_ms']:7.1f} {row['max_ms']:7.1f}",
                flush=True,
            )
            previous, previous_at = metrics(cdp), time.monotonic()
        browser.close()
    steady = [r for r in rows if r["t_s"] > WARM_UP_S] or rows
    return {"rows": rows, "steady": steady, "latencies": latencies_after_warm_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--chairs", type=int, default=30)
    parser.add_argument("--interval-s", type=float, default=60)
    args = parser.parse_args()
    started = datetime.now(UTC)
    result = run(args.minutes, args.chairs, args.interval_s)
    steady, latencies = result["steady"], result["latencies"]
    print()
    print(f"date: {started:%Y-%m-%d %H:%M} UTC, {args.minutes:g} min, {args.chairs} chairs at 1 Hz")
    print(f"machine: {machine()}")
    print(f"after {WARM_UP_S / 60:g} min warm-up ({len(steady)} intervals):")
    busy = [r["busy_pct"] for r in steady]
    print(
        f"  main thread busy: mean {statistics.fmean(busy):.2f} % of a core, max {max(busy):.2f} %"
    )
    heap = [r["heap_mb"] for r in steady]
    print(
        f"  JS heap after GC: first {heap[0]:.2f} MB, last {heap[-1]:.2f} MB, "
        f"min {min(heap):.2f}, max {max(heap):.2f} MB"
    )
    if latencies:
        p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
        print(
            f"  receipt → tile: {len(latencies)} messages, p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
        )


if __name__ == "__main__":
    main()
