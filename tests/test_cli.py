"""The `vigil` command, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from websockets.sync.client import connect

from app.storage.models import Sample
from tests.conftest import Clinic, LiveServer, free_port

VIGIL = str(Path(sys.executable).parent / "vigil")


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIGIL, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def env_with(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    return {**environment, **extra}


def test_help_names_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "demo", "scenarios", "simulate", "replay", "db"):
        assert command in result.stdout


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from tests.conftest import REPO

    return ScriptDirectory(str(REPO / "alembic")).get_current_head()


def test_db_upgrade_creates_the_sqlite_file_and_is_safe_twice(tmp_path: Path) -> None:
    environment = env_with(VIGIL_DATA_DIR=str(tmp_path / "data"))
    for _ in range(2):
        result = run("db", "upgrade", env=environment)
        assert result.returncode == 0, result.stderr
        assert f"at revision {head_revision()}" in result.stdout
    assert (tmp_path / "data" / "vigil.sqlite").is_file()


@pytest.fixture
def process_cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_healthy(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def test_serve_answers_healthz(
    tmp_path: Path, process_cleanup: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [VIGIL, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env_with(VIGIL_DATA_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process_cleanup.append(process)
    wait_healthy(port, process)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["database"] == "sqlite"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_simulate_sends_through_the_public_door(live_server: LiveServer, clinic: Clinic) -> None:
    result = run(
        "simulate", "--chairs", "3", "--duration", "3", "--seed", "7", "--url", live_server.http_url
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent" in result.stdout
    engine = create_engine(clinic.url)
    with engine.connect() as connection:
        per_chair = dict(
            connection.execute(
                select(Sample.chair_id, func.count()).group_by(Sample.chair_id)
            ).all()
        )
    engine.dispose()
    assert len(per_chair) == 3
    assert all(count >= 3 for count in per_chair.values()), per_chair  # at least HR every second


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_simulate_stops_with_the_servers_reason(live_server: LiveServer, clinic: Clinic) -> None:
    result = run(
        "simulate",
        "--chairs",
        "1",
        "--duration",
        "2",
        "--device-prefix",
        "ghost-",
        "--url",
        live_server.http_url,
    )
    assert result.returncode == 1
    assert "unknown device 'ghost-01'" in result.stderr  # the server's own reason


def test_demo_starts_a_clinic_with_eight_live_chairs(
    tmp_path: Path, process_cleanup: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [VIGIL, "demo", "--port", str(port)],
        env=env_with(VIGIL_DATA_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process_cleanup.append(process)
    wait_healthy(port, process)
    sites = httpx.get(f"http://127.0.0.1:{port}/api/v1/sites").json()
    assert [site["chair_count"] for site in sites] == [8]
    site_id = sites[0]["id"]
    with connect(f"ws://127.0.0.1:{port}/ws/sites/{site_id}") as ws:
        deadline = time.monotonic() + 15
        live_chairs: set[int] = set()
        while len(live_chairs) < 8 and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=5))
            if message["type"] == "samples":
                live_chairs.add(message["chair_id"])
    assert len(live_chairs) == 8, "every simulated chair sends"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}/sites/{site_id}" in output
    # uvicorn re-raises Ctrl-C after a clean shutdown, so the shell sees the usual 130.
    assert process.returncode in (0, 130)
    assert "Traceback" not in output
