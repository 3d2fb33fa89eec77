"""`vigil simulate --door mllp|mqtt`: the simulator reaches Vigil through each adapter too."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from app.storage.models import Device, Sample
from tests.adapters.conftest import (
    MLLP_ENV,
    AdapterServer,
    start_adapter_server,
)
from tests.conftest import Clinic
from tests.test_cli import run


@pytest.fixture
def server(sqlite_clinic: Clinic, tmp_path: Path, mosquitto: None) -> Iterator[AdapterServer]:
    env = {
        **MLLP_ENV,
        "VIGIL_ADAPTERS": "mllp,mqtt",
        # The CLI publishes on the documented default prefix; a unique client id keeps this
        # server's persistent session apart from other tests' servers.
        "VIGIL_MQTT_CLIENT_ID": f"vigil-sim-doors-{uuid.uuid4().hex[:8]}",
    }
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


def stored_for(server: AdapterServer, prefix: str) -> int:
    engine = create_engine(server.clinic.url)
    with engine.connect() as connection:
        count = connection.scalar(
            select(func.count())
            .select_from(Sample)
            .join(Device, Device.id == Sample.device_id)
            .where(Device.identifier.like(f"{prefix}%"))
        )
    engine.dispose()
    return int(count or 0)


@pytest.mark.parametrize("door", ["mllp", "mqtt"])
def test_simulate_sends_through_the_door(server: AdapterServer, door: str) -> None:
    prefix = f"sim-{door}-{uuid.uuid4().hex[:6]}-"
    for index, chair in enumerate(server.chair_ids()[:2], start=1):
        server.register(f"{prefix}{index:02d}", chair)
    address = f"127.0.0.1:{server.adapter_port('mllp')}" if door == "mllp" else "127.0.0.1:1883"
    # MQTT batches carry the site's gateway credential; MLLP is let in by source address.
    credential = ["--token", server.clinic.device_token] if door == "mqtt" else []
    result = run(
        "simulate",
        "--door",
        door,
        f"--{door}",
        address,
        "--chairs",
        "2",
        "--duration",
        "20",
        "--speed",
        "10",
        "--seed",
        "3",
        "--device-prefix",
        prefix,
        *credential,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sent = re.search(r"\((\d+) observations\)", result.stdout)
    assert sent, result.stdout
    assert int(sent.group(1)) > 40, "20 s of two chairs"
    assert stored_for(server, prefix) == int(sent.group(1)), "every acknowledged one is stored"


def test_an_unknown_door_or_address_is_named(server: AdapterServer) -> None:
    bad_door = run("simulate", "--door", "carrier-pigeon", "--duration", "2")
    assert bad_door.returncode == 2
    assert "carrier-pigeon" in bad_door.stdout + bad_door.stderr
    bad_address = run("simulate", "--door", "mllp", "--mllp", "nowhere", "--duration", "2")
    assert bad_address.returncode == 2
    assert "host:port" in bad_address.stdout + bad_address.stderr
