"""The simulator drives each door: HTTP, HL7 over MLLP, MQTT and the ingest websocket."""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import connect

from app.exports.hl7v2 import batch_oru
from simulators.fleet import ChairRun, fleet
from simulators.scenarios import load_scenario
from tests.adapters.conftest import (
    BROKER,
    MLLP_ENV,
    AdapterServer,
    MllpClient,
    ack_fields,
    start_adapter_server,
    stored,
)
from tests.conftest import Clinic

SECONDS = 20  # of simulated session per chair
PREFIX = f"vigil-test/{uuid.uuid4().hex[:10]}"  # this module's MQTT topics


@pytest.fixture
def server(mosquitto: None, sqlite_clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    prefix = PREFIX
    env = {
        **MLLP_ENV,
        "VIGIL_ADAPTERS": "mllp,mqtt",
        "VIGIL_MQTT_TOPIC_PREFIX": prefix,
        "VIGIL_MQTT_CLIENT_ID": f"vigil-{prefix[-10:]}",
    }
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


def simulated_batches(prefix: str) -> list[dict[str, Any]]:
    """Two chairs of the `steady` scenario, SECONDS long, ending now (device times past)."""
    run = ChairRun(fleet(load_scenario("steady"), chairs=2, seed=7, prefix=prefix), SECONDS)
    start = datetime.now(UTC) - timedelta(seconds=SECONDS + 1)
    batches: list[dict[str, Any]] = []
    for feed in run.feeds(start):
        batches.extend(dict(send.body) for send in feed if send.body)
    assert batches, "the simulator sent nothing"
    return batches


def observations_of(batches: list[dict[str, Any]], device: str) -> int:
    return sum(len(b["observations"]) for b in batches if b["device_id"] == device)


def register_all(server: AdapterServer, batches: list[dict[str, Any]]) -> list[str]:
    devices = sorted({b["device_id"] for b in batches})
    for index, device in enumerate(devices):
        server.register(device, server.chair_ids()[index % 3], kind="simulated")
    return devices


def test_simulator_drives_http_mllp_mqtt_and_websocket(server: AdapterServer) -> None:
    prefix = PREFIX
    doors = {door: simulated_batches(f"sim-{door}-") for door in ("http", "mllp", "mqtt", "ws")}
    devices = {door: register_all(server, batches) for door, batches in doors.items()}

    for batch in doors["http"]:
        response = httpx.post(
            f"{server.http_url}/api/v1/observations",
            json=batch,
            headers=server.clinic.device_auth,
            timeout=10,
        )
        assert response.status_code == 201, response.text

    with MllpClient(server.adapter_port("mllp")) as client:
        for index, batch in enumerate(doors["mllp"]):
            ack = client.send(batch_oru(batch, f"sim-{index}", datetime.now(UTC)))
            code, _, text = ack_fields(ack)
            assert code == "AA", text

    answers: queue.Queue[dict[str, Any]] = queue.Queue()
    mqtt = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{uuid.uuid4()}")
    mqtt.on_message = lambda _c, _u, message: answers.put(json.loads(message.payload))
    mqtt.connect(*BROKER)
    mqtt.loop_start()
    try:
        mqtt.subscribe(f"{prefix}/devices/+/ack", qos=1)
        for batch in doors["mqtt"]:
            topic = f"{prefix}/devices/{batch['device_id']}/observations"
            signed = {**batch, "token": server.clinic.device_token}
            mqtt.publish(topic, json.dumps(signed), qos=1).wait_for_publish(5)
        statuses = [answers.get(timeout=10)["status"] for _ in doors["mqtt"]]
    finally:
        mqtt.loop_stop()
        mqtt.disconnect()
    assert set(statuses) == {201}

    with connect(f"{server.ws_url}/ws/ingest", additional_headers=server.clinic.device_auth) as ws:
        for batch in doors["ws"]:
            ws.send(json.dumps(batch))
        replies = [json.loads(ws.recv(timeout=10)) for _ in doors["ws"]]
    assert {reply["status"] for reply in replies} == {201}

    for door, batches in doors.items():
        for device in devices[door]:
            assert len(stored(server, device)) == observations_of(batches, device), door
