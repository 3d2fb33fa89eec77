"""The `vigil` command, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from websockets.sync.client import connect

from app.storage.models import Sample
from tests.conftest import PASSWORD, Clinic, LiveServer, free_port

VIGIL = str(Path(sys.executable).parent / "vigil")


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIGIL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=stdin,
        check=False,
    )


def env_with(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    return {**environment, **extra}


def test_help_names_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in (
        "serve",
        "demo",
        "scenarios",
        "simulate",
        "replay",
        "db",
        "user",
        "device-credential",
    ):
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
        *("simulate", "--chairs", "3", "--duration", "3", "--seed", "7"),
        *("--url", live_server.http_url, "--token", clinic.device_token),
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
        "--token",
        clinic.device_token,
    )
    assert result.returncode == 1
    assert "unknown device 'ghost-01'" in result.stderr  # the server's own reason

    # Without a device credential, the first batch is refused, and the reason said.
    unsigned = run(
        *("simulate", "--chairs", "1", "--duration", "2", "--url", live_server.http_url),
        env=env_with(),
    )
    assert unsigned.returncode == 1
    assert "(401)" in unsigned.stderr
    assert "device credential is required" in unsigned.stderr


def one_hr(device: str) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {
        "device_id": device,
        "observations": [{"vital": "hr", "value": 70, "unit": "/min", "device_time": now}],
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_users_and_device_credentials_are_made_from_the_command_line(
    live_server: LiveServer, clinic: Clinic
) -> None:
    environment = env_with(VIGIL_DATABASE_URL=clinic.url)
    base = live_server.http_url

    created = run(
        "user",
        "create",
        "ada",
        "--role",
        "admin",
        "--password-stdin",
        env=environment,
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert "created admin 'ada'" in created.stdout
    listed = run("user", "list", env=environment)
    assert re.search(r"\bada\s+admin\s+all sites\s+active", listed.stdout), listed.stdout
    signed_in = httpx.post(
        f"{base}/api/v1/auth/token", json={"username": "ada", "password": PASSWORD}
    )
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["role"] == "admin"
    short = run(
        "user",
        "create",
        "bob",
        "--role",
        "nurse",
        "--password-stdin",
        env=environment,
        stdin="short\n",
    )
    assert short.returncode == 1
    assert "at least" in short.stderr

    issued = run(
        "device-credential",
        "issue",
        "--label",
        "ward gateway",
        "--site",
        str(clinic.site_id),
        env=environment,
    )
    assert issued.returncode == 0, issued.stdout + issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    assert token.startswith("vgd_")
    credential_id = re.search(r"credential (\d+)", issued.stdout)
    assert credential_id, issued.stdout
    headers = {"Authorization": f"Bearer {token}"}
    sent = httpx.post(f"{base}/api/v1/observations", json=one_hr(clinic.device(1)), headers=headers)
    assert sent.status_code == 201, sent.text

    revoked = run("device-credential", "revoke", credential_id.group(1), env=environment)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    refused = httpx.post(
        f"{base}/api/v1/observations", json=one_hr(clinic.device(1)), headers=headers
    )
    assert refused.status_code == 401
    unknown_site = run(
        "device-credential", "issue", "--label", "x", "--site", "9999", env=environment
    )
    assert unknown_site.returncode == 1


class Lines:
    """A process's output, read line by line on a thread of its own as it is written."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self._queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self._queue.put(line)

    def until(self, text: str, timeout: float = 30) -> str:
        """Everything read so far, once a line containing `text` has arrived."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} in the output: {''.join(self.seen)}")
            try:
                self.seen.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                continue
        return "".join(self.seen)

    def rest(self) -> str:
        self._thread.join(timeout=15)
        while not self._queue.empty():
            self.seen.append(self._queue.get())
        return "".join(self.seen)


def test_demo_starts_a_clinic_with_eight_live_chairs(
    tmp_path: Path, process_cleanup: list[subprocess.Popen[str]]
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [VIGIL, "demo", "--port", str(port)],
        env=env_with(VIGIL_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process_cleanup.append(process)
    output = Lines(process)
    banner = output.until("Stop with Ctrl-C")
    passwords = dict(re.findall(r"user (\S+)\s+password (\S+)", banner))
    assert sorted(passwords) == ["admin", "clinician", "nurse"], banner
    wait_healthy(port, process)

    assert httpx.get(f"{base}/api/v1/sites").status_code == 401
    signed_in = httpx.post(
        f"{base}/api/v1/auth/token", json={"username": "nurse", "password": passwords["nurse"]}
    )
    assert signed_in.status_code == 200, signed_in.text
    nurse = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    sites = httpx.get(f"{base}/api/v1/sites", headers=nurse).json()
    assert [site["chair_count"] for site in sites] == [8]
    site_id = sites[0]["id"]

    # The nurse station is behind the browser sign-in.
    with httpx.Client(base_url=base, headers={"Accept": "text/html"}) as browser:
        gate = browser.get(f"/sites/{site_id}")
        assert gate.status_code == 303
        assert gate.headers["location"].startswith("/login")
        form = {"username": "nurse", "password": passwords["nurse"], "next": f"/sites/{site_id}"}
        login = browser.post("/login", data=form)
        assert (login.status_code, login.headers["location"]) == (303, f"/sites/{site_id}")
        assert browser.get(f"/sites/{site_id}").status_code == 200

    with connect(f"ws://127.0.0.1:{port}/ws/sites/{site_id}", additional_headers=nurse) as ws:
        deadline = time.monotonic() + 15
        live_chairs: set[int] = set()
        while len(live_chairs) < 8 and time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=5))
            if message["type"] == "samples":
                live_chairs.add(message["chair_id"])
    assert len(live_chairs) == 8, "every simulated chair sends"
    process.send_signal(signal.SIGINT)
    process.wait(timeout=15)
    text = output.rest()
    assert f"http://127.0.0.1:{port}/sites/{site_id}" in text
    # uvicorn re-raises Ctrl-C after a clean shutdown, so the shell sees the usual 130.
    assert process.returncode in (0, 130)
    assert "Traceback" not in text
