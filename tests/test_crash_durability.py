"""Crash durability: kill -9 the real server under load, restart it, count every sample.

The server runs as `vigil serve` does it (uvicorn with `vigil.server:create_server`) in a
process of its own; a few device clients post batches back to back over HTTP until it is
killed with SIGKILL. After a restart each client sends again what was not acknowledged (the
post in flight when the server died, stored or not), and once more what was (as a device
whose answer was lost would). Then every acknowledged sample must be stored exactly once,
every resend answered 201 with its samples counted as stored or duplicates, and nothing
stored that was not sent. On SQLite and PostgreSQL.

Bounded by design rather than by a clock: LOAD_S of load and two server starts (each about
3 s of CPU, mostly imports and the nurse station's layout): about 12 s per database on an
idle 2-core machine, more when the machine is shared (35-45 s at a load average of 10).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from app.storage.models import Device, Sample
from tests.conftest import REPO, Clinic, free_port

CLIENTS = 4
LOAD_S = 1.5  # posting back to back before the kill
READY_S = 30.0  # the server's start (the nurse station's layout is built at start)
URL = "/api/v1/observations"
VITALS = (("hr", "/min"), ("spo2", "%"), ("pr", "/min"))


@dataclass
class DeviceClient:
    """One device's sends: each batch it sent, and whether it was acknowledged."""

    number: int
    device: str
    base: datetime
    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    unanswered: list[dict[str, Any]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)

    def batch(self, sequence: int) -> dict[str, Any]:
        # Clients sharing a device interleave their device times, so no two batches overlap.
        at = self.base + timedelta(milliseconds=10 * (sequence * CLIENTS + self.number))
        return {
            "device_id": self.device,
            "observations": [
                {
                    "vital": vital,
                    "value": 60 + (sequence + offset) % 40,
                    "unit": unit,
                    "device_time": at.isoformat(),
                }
                for offset, (vital, unit) in enumerate(VITALS)
            ],
        }


class ServerProcess:
    """`vigil serve`'s server in a subprocess, on its own port, logging to a file."""

    def __init__(self, database_url: str, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")},
            "VIGIL_DATABASE_URL": database_url,
            "VIGIL_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(REPO),
        }
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "vigil.server:create_server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited: {self._log.read_text()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not start in {READY_S} s: {self._log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


async def load_until_killed(
    server: ServerProcess, clients: list[DeviceClient], auth: dict[str, str]
) -> None:
    """Every client posts back to back; after LOAD_S the server is killed mid-load. A post
    without an answer is kept as unanswered, and that client stops."""

    async def run(client: DeviceClient, http: httpx.AsyncClient) -> None:
        sequence = 0
        while True:
            body = client.batch(sequence)
            sequence += 1
            try:
                answer = await http.post(URL, json=body)
            except httpx.TransportError:
                client.unanswered.append(body)
                return
            if answer.status_code == 201:
                client.acknowledged.append(body)
            else:
                client.refused.append((answer.status_code, answer.text))
                return

    async def kill_later() -> None:
        await asyncio.sleep(LOAD_S)
        await asyncio.to_thread(server.kill)

    connections = [
        httpx.AsyncClient(base_url=server.url, headers=auth, timeout=10) for _ in clients
    ]
    try:
        await asyncio.gather(
            kill_later(), *(run(c, h) for c, h in zip(clients, connections, strict=True))
        )
    finally:
        for http in connections:
            await http.aclose()


def stored_samples(url: str) -> list[tuple[str, str, datetime, float]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Device.identifier, Sample.vital, Sample.device_time, Sample.value).join(
                    Device, Sample.device_id == Device.id
                )
            ).all()
    finally:
        engine.dispose()
    return [(device, vital, at, value) for device, vital, at, value in rows]


def samples_of(body: dict[str, Any]) -> list[tuple[str, str, datetime, float]]:
    return [
        (body["device_id"], o["vital"], datetime.fromisoformat(o["device_time"]), float(o["value"]))
        for o in body["observations"]
    ]


def test_every_acknowledged_sample_survives_kill_9_exactly_once(
    clinic: Clinic, tmp_path: Path
) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    clients = [DeviceClient(n, clinic.device(1 + n % clinic.chairs), base) for n in range(CLIENTS)]
    server = ServerProcess(clinic.url, tmp_path, tmp_path / "server.log")
    server.start()
    try:
        asyncio.run(load_until_killed(server, clients, clinic.device_auth))
        assert server.process is not None
        assert server.process.returncode == -signal.SIGKILL
        server.start()  # the same database, after the crash
        resends = [(body, True) for c in clients for body in c.unanswered]
        # A device whose answer was lost cannot tell that from an unstored batch.
        resends += [(c.acknowledged[-1], False) for c in clients if c.acknowledged]
        answers = [
            httpx.post(f"{server.url}{URL}", json=body, headers=clinic.device_auth, timeout=10)
            for body, _ in resends
        ]
    finally:
        server.stop()

    assert [c.refused for c in clients] == [[]] * CLIENTS, "nothing refused under load"
    acknowledged = [body for c in clients for body in c.acknowledged]
    assert len(acknowledged) >= 2 * CLIENTS, "the load ran before the kill"
    for (body, unanswered), answer in zip(resends, answers, strict=True):
        assert answer.status_code == 201, answer.text
        counts = answer.json()
        assert counts["stored"] + counts["duplicates"] == len(body["observations"])
        if not unanswered:
            assert counts["duplicates"] == len(body["observations"]), "stored before: once"

    rows = stored_samples(clinic.url)
    keys = Counter((device, vital, at) for device, vital, at, _ in rows)
    assert [key for key, n in keys.items() if n > 1] == [], "no sample stored twice"
    stored = set(rows)
    sent = {sample for body, _ in resends for sample in samples_of(body)}
    sent |= {sample for body in acknowledged for sample in samples_of(body)}
    missing = [s for body in acknowledged for s in samples_of(body) if s not in stored]
    assert missing == [], f"{len(missing)} acknowledged samples lost"
    assert stored == sent, "every sample sent is stored (after the resends), and nothing else"
