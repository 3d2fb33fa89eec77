"""The MQTT adapter against the real local Mosquitto broker."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from app.adapters.events import ConnectionState
from tests.adapters.conftest import BROKER, AdapterServer, start_adapter_server, stored
from tests.conftest import Clinic


@pytest.fixture
def prefix() -> str:
    """Topics of this test alone: the broker is shared with everything else on the machine."""
    return f"vigil-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def mqtt_server(
    mosquitto: None, sqlite_clinic: Clinic, tmp_path: Path, prefix: str
) -> Iterator[AdapterServer]:
    env = {
        "VIGIL_ADAPTERS": "mqtt",
        "VIGIL_MQTT_TOPIC_PREFIX": prefix,
        "VIGIL_MQTT_CLIENT_ID": f"vigil-{prefix.rsplit('/', 1)[1]}",
        "VIGIL_MQTT_RECONNECT_MIN_S": "0.2",
    }
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


class Device:
    """A device on the broker: a real paho client publishing batches, reading answers.

    Each batch it sends carries `token`, its credential, as the adapter requires.
    """

    def __init__(self, prefix: str, device_id: str, token: str | None, will: bool = False) -> None:
        self.prefix, self.device_id, self.token = prefix, device_id, token
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4()}")
        if will:
            self.client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        self.client.on_message = lambda _c, _u, m: self.answers.put(json.loads(m.payload))
        self.client.connect(*BROKER, keepalive=5)
        self.client.loop_start()
        self.client.subscribe(self.topic("ack"), qos=1)
        time.sleep(0.1)  # let the subscription settle before the first answer can arrive

    def topic(self, leaf: str) -> str:
        return f"{self.prefix}/devices/{self.device_id}/{leaf}"

    def publish(self, leaf: str, payload: str | bytes, retain: bool = False) -> None:
        self.client.publish(self.topic(leaf), payload, qos=1, retain=retain).wait_for_publish(5)

    def signed(self, body: dict[str, Any]) -> dict[str, Any]:
        return body if self.token is None else {**body, "token": self.token}

    def send(self, body: dict[str, Any] | bytes) -> dict[str, Any]:
        payload = body if isinstance(body, bytes) else json.dumps(self.signed(body))
        self.publish("observations", payload)
        return self.answers.get(timeout=10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def device(mqtt_server: AdapterServer, prefix: str) -> Iterator[Device]:
    mqtt_server.register("oximeter-7", mqtt_server.chair_ids()[0], kind="oximeter")
    client = Device(prefix, "oximeter-7", mqtt_server.clinic.device_token)
    yield client
    client.close()


def reading(vital: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "vital": vital,
        "value": value,
        "unit": unit,
        "device_time": datetime.now(UTC).isoformat(),
    }


def test_a_published_batch_is_stored_and_answered(
    mqtt_server: AdapterServer, device: Device
) -> None:
    answer = device.send(
        {"ref": 41, "observations": [reading("spo2", 96, "%"), reading("pr", 71, "/min")]}
    )
    assert answer["status"] == 201, answer
    assert (answer["ref"], answer["accepted"], answer["device_id"]) == (41, 2, "oximeter-7")
    assert answer["chair_id"] == mqtt_server.chair_ids()[0]
    assert answer["session_id"] is not None
    assert [(v, x) for v, x, _ in stored(mqtt_server, "oximeter-7")] == [("spo2", 96), ("pr", 71)]
    connected = mqtt_server.recorder.wait_for_link("oximeter-7", ConnectionState.CONNECTED)
    assert connected.adapter == "mqtt"


def test_errors_are_the_ones_http_gives(mqtt_server: AdapterServer, device: Device) -> None:
    bad = {"device_id": "oximeter-7", "observations": [reading("spo2", 101, "%")]}
    over_http = httpx.post(
        f"{mqtt_server.http_url}/api/v1/observations",
        json=bad,
        headers=mqtt_server.clinic.device_auth,
        timeout=10,
    )
    over_mqtt = device.send(bad)
    assert over_mqtt == {"ref": None, "status": over_http.status_code, **over_http.json()}
    assert over_mqtt["status"] == 422
    assert over_mqtt["detail"][0]["loc"] == ["body", "observations", 0, "value"]

    empty = device.send({"observations": []})
    assert empty["status"] == 422
    assert empty["detail"][0]["loc"] == ["body", "observations"]

    assert device.send(b"{not json")["status"] == 400
    mismatch = device.send(
        {"device_id": "someone-else", "observations": [reading("hr", 60, "/min")]}
    )
    assert mismatch["status"] == 422
    assert "differs from the topic" in mismatch["detail"][0]["msg"]

    # Still serving after all that.
    assert device.send({"observations": [reading("hr", 60, "/min")]})["status"] == 201


def test_a_batch_needs_a_credential_that_may_send_for_its_device(
    mqtt_server: AdapterServer, device: Device, prefix: str
) -> None:
    batch = {"observations": [reading("hr", 66, "/min")]}
    gateway_token = device.token
    device.token = None
    unsigned = device.send({"ref": 1, **batch})
    assert (unsigned["ref"], unsigned["status"], unsigned["code"]) == (1, 401, "not_authenticated")
    device.token = "vgd_not-a-credential-of-this-clinic"
    assert device.send(batch)["status"] == 401
    assert stored(mqtt_server, "oximeter-7") == []  # nothing stored from refused batches

    # A credential bound to another device may not send for this one.
    _, others = mqtt_server.issue_credential(mqtt_server.clinic.device(1))
    device.token = others
    refused = device.send(batch)
    assert (refused["status"], refused["code"]) == (403, "forbidden")
    assert "oximeter-7" in refused["detail"]

    # Its own credential may, until it is revoked: the next batch is refused.
    credential_id, own = mqtt_server.issue_credential("oximeter-7")
    device.token = own
    assert device.send(batch)["status"] == 201
    mqtt_server.revoke_credential(credential_id)
    assert device.send(batch)["status"] == 401
    device.token = gateway_token
    assert device.send({"observations": [reading("hr", 67, "/min")]})["status"] == 201
    assert [x for _, x, _ in stored(mqtt_server, "oximeter-7")] == [66, 67]


def test_an_unknown_device_gets_404(mqtt_server: AdapterServer, prefix: str) -> None:
    stranger = Device(prefix, "not-registered", mqtt_server.clinic.device_token)
    try:
        answer = stranger.send({"observations": [reading("hr", 60, "/min")]})
    finally:
        stranger.close()
    assert answer["status"] == 404
    assert answer["code"] == "not_found"
    assert "not-registered" in answer["detail"]


def test_status_and_last_will_become_link_events(mqtt_server: AdapterServer, prefix: str) -> None:
    chair = mqtt_server.chair_ids()[2]
    mqtt_server.register("cuff-3", chair, kind="nibp")
    cuff = Device(prefix, "cuff-3", None, will=True)  # status messages carry no credential
    cuff.publish("status", "online", retain=True)
    online = mqtt_server.recorder.wait_for_link("cuff-3", ConnectionState.CONNECTED)
    assert (online.adapter, online.chair_id) == ("mqtt", chair)

    # The device dies without saying goodbye: the broker publishes its last will.
    cuff.client.loop_stop()
    sock = cuff.client.socket()
    assert sock is not None
    sock.close()
    lost = mqtt_server.recorder.wait_for_link("cuff-3", ConnectionState.DISCONNECTED, timeout=15)
    assert (lost.chair_id, lost.reason) == (chair, "device offline (last will)")


def adapter_state(server: AdapterServer) -> ConnectionState:
    """The MQTT adapter's state now (a call, so the type checker does not pin it)."""
    return server.runtime.adapters[0].state


def test_reconnects_and_receives_what_was_published_meanwhile(
    mqtt_server: AdapterServer, device: Device, prefix: str
) -> None:
    assert device.send({"observations": [reading("hr", 61, "/min")]})["status"] == 201
    # Another client takes Vigil's client id: the broker drops Vigil's connection.
    client_id = f"vigil-{prefix.rsplit('/', 1)[1]}"
    intruder = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    intruder.connect(*BROKER)
    intruder.loop_start()
    deadline = time.monotonic() + 10
    while adapter_state(mqtt_server) is ConnectionState.CONNECTED:
        assert time.monotonic() < deadline, "the adapter never noticed it was dropped"
        time.sleep(0.02)
    intruder.loop_stop()
    intruder.disconnect()

    # Published while Vigil was away (QoS 1, persistent session): delivered on reconnect.
    device.publish(
        "observations", json.dumps(device.signed({"observations": [reading("hr", 62, "/min")]}))
    )
    answer = device.answers.get(timeout=15)
    assert answer["status"] == 201, answer
    assert [x for v, x, _ in stored(mqtt_server, "oximeter-7") if v == "hr"] == [61, 62]
    assert adapter_state(mqtt_server) is ConnectionState.CONNECTED
    mqtt_events = [e.state for e in mqtt_server.recorder.links() if e.device_identifier is None]
    assert mqtt_events.count(ConnectionState.CONNECTED) >= 2
    # While Vigil was off the broker, the device's link counted as lost.
    lost = mqtt_server.recorder.wait_for_link("oximeter-7", ConnectionState.DISCONNECTED)
    assert lost.reason == "broker connection lost"
