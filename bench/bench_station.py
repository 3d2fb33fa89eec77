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
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import CDPSession, Page, sync_playwright

# scripts/ is not a package, so its kit is imported by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
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

WARM_UP_S = 300.0
NURSE = "rn.bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def heap_slope_kb_per_min(rows: list[dict[str, float]]) -> float:
    """The heap's growth over these intervals, fitted by least squares, in kB a minute."""
    minutes = [r["t_s"] / 60 for r in rows]
    heap_kb = [r["heap_mb"] * 1000 for r in rows]
    return statistics.linear_regression(minutes, heap_kb).slope


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


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
    chromium = chromium_executable()
    with scratch_site(chairs, "vigil-bench-station-") as (env, site_id):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gateway = issue_gateway_credential(env, site_id, "bench")
        password = create_nurse(env, site_id, NURSE)
        server = subprocess.Popen([VIGIL, "serve", "--port", str(port), "--no-upgrade"], env=env)
        simulate = None
        try:
            wait_healthy(base, server)
            simulate = subprocess.Popen(
                [VIGIL, "simulate", "--chairs", str(chairs), "--url", base, "--seed", "7",
                 "--duration", str(int(minutes * 60 + 600))],
                env={**env, "VIGIL_DEVICE_TOKEN": gateway},
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
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
        sign_in(page, base, f"/sites/{site_id}", NURSE, password)
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
    half = len(steady) // 2
    if half >= 2:
        print(
            "  JS heap trend (least squares): "
            f"{heap_slope_kb_per_min(steady[:half]):+.1f} kB/min in the first half, "
            f"{heap_slope_kb_per_min(steady[half:]):+.1f} kB/min in the second"
        )
    if latencies:
        p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
        print(
            f"  receipt → tile: {len(latencies)} messages, p50 {p50:.1f} ms, "
            f"p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
        )


if __name__ == "__main__":
    main()
