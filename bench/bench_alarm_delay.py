"""Alarm signal delay: from posting a sample to the alarm reaching a websocket screen.

IEC 60601-1-8 (clause 6.11) asks a distributed alarm system to disclose its delays. This
measures Vigil's part: a real uvicorn server on loopback, a real HTTP client posting a
desaturation (SpO2 84: the zero-delay desat rule), and a real websocket client. Beside
it, in the same run, the same post's `samples` delta is the baseline: what any value
takes to reach a screen. The alarm's extra delay is the engine, storing the alarm and
broadcasting it.

As in a clinic, the poster sends the site's gateway credential (checked on every batch)
and the screen is a nurse of the site, signed in with an API token (bench/_credentials.py).

    python bench/bench_alarm_delay.py [--rounds 60] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from _credentials import add_gateway_credential, add_person, bearer
from websockets.sync.client import ClientConnection, connect

from app.settings import REPO_ROOT, Settings
from app.sites.demo import device_identifier, seed_demo
from app.storage import migrate
from app.storage.db import Database
from app.storage.models import Role
from vigil.server import create_server


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_server(url: str) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_server(Settings(database_url=url)), log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, port


def spo2(values: list[float]) -> list[dict[str, Any]]:
    end = datetime.now(UTC)
    return [
        {
            "vital": "spo2",
            "value": value,
            "unit": "%",
            "device_time": (end - timedelta(seconds=len(values) - 1 - i)).isoformat(),
        }
        for i, value in enumerate(values)
    ]


def wait_for(ws: ClientConnection, predicate: Any, timeout: float = 10) -> tuple[float, Any]:
    deadline = time.perf_counter() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.perf_counter())))
        if predicate(message):
            return time.perf_counter(), message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/vigil.sqlite"
    migrate.upgrade(url, REPO_ROOT / "alembic")
    db = Database(url)
    with db.session() as session:
        site_id = seed_demo(session, chairs=8)
        device_auth = bearer(add_gateway_credential(session, site_id))
        nurse_auth = bearer(add_person(session, "bench.nurse", Role.NURSE, [site_id]))
    db.close()
    server, thread, port = start_server(url)
    base = f"http://127.0.0.1:{port}"
    sample_ms: list[float] = []
    alarm_ms: list[float] = []
    try:
        with (
            httpx.Client(base_url=base) as client,
            connect(
                f"ws://127.0.0.1:{port}/ws/sites/{site_id}", additional_headers=nurse_auth
            ) as ws,
        ):
            ws.recv(timeout=5)  # snapshot
            for n in range(args.rounds):
                device = device_identifier(2 + n % 6)  # chairs 2-7: all in a session
                sent = time.perf_counter()
                assert (
                    client.post(
                        "/api/v1/observations",
                        json={"device_id": device, "observations": spo2([84, 84])},
                        headers=device_auth,
                    ).status_code
                    == 201
                )
                got_sample, _ = wait_for(ws, lambda m: m["type"] == "samples")
                got_alarm, raised = wait_for(
                    ws,
                    lambda m: (
                        m["type"] == "alarm"
                        and m["event"] == "raised"
                        and m["alarm"]["rule_id"] == "spo2_desat"
                    ),
                )
                sample_ms.append((got_sample - sent) * 1000)
                alarm_ms.append((got_alarm - sent) * 1000)
                # Recover, acknowledge (the alarm latches), so the next round raises anew.
                client.post(
                    "/api/v1/observations",
                    json={"device_id": device, "observations": spo2([98] * 5)},
                    headers=device_auth,
                ).raise_for_status()
                client.post(  # by the signed-in nurse: the route no longer takes a "by"
                    f"/api/v1/alarms/{raised['alarm']['alarm_id']}/acknowledge", headers=nurse_auth
                ).raise_for_status()
                wait_for(
                    ws,
                    lambda m, alarm_id=raised["alarm"]["alarm_id"]: (
                        m["type"] == "alarm"
                        and m["alarm"]["alarm_id"] == alarm_id
                        and m["alarm"]["state"] == "cleared"
                    ),
                )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"date:     {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine:  nproc {os.cpu_count()}, {cpu}, load {os.getloadavg()[0]:.2f}")
    print(f"database: {url.split(':')[0]}; rounds: {args.rounds}")
    print(f"{'post → screen':<28}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}")
    for label, values in (
        ("samples delta (baseline)", sample_ms),
        ("desat alarm (raised)", alarm_ms),
    ):
        print(
            f"{label:<28}{statistics.median(values):>8.1f}{percentile(values, 95):>8.1f}"
            f"{max(values):>8.1f}"
        )
    extra = [a - s for a, s in zip(alarm_ms, sample_ms, strict=True)]
    ratio = percentile(alarm_ms, 95) / percentile(sample_ms, 95)
    print(
        f"alarm after its samples: p50 {statistics.median(extra):.1f} ms, "
        f"p95 {percentile(extra, 95):.1f} ms; ratio of p95s {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
