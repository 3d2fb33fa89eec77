"""A device's own alerts reach the documented technical alarms through every door.

Over real sockets: ORU^R40 over MLLP (a Philips PIC iX NIBP failure twice, an IHE PCD-04
equipment fault started and ended), MQTT (SpO2 probe off), HTTP (an equipment fault with
the device's own words) and the websocket ingest. Each alarm is checked where a nurse
sees it (the site's websocket) and where the record is kept (the alarms API).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7  # type: ignore[import-untyped]
import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from app.main import create_app
from app.settings import Settings
from tests.adapters.conftest import (
    AdapterServer,
    MllpClient,
    ack_fields,
    start_adapter_server,
)
from tests.adapters.test_mqtt import Device
from tests.conftest import Clinic, LiveServer
from tests.test_alarms_server import alarm_message, snapshot

ALERTS = Path(__file__).parent / "hl7_alerts"
PICIX_MONITOR = "0060B1FFFE52E1F0"  # OBX-18 of the PIC iX messages
IHE_REPORTER = "ACDE48234567ABCD"  # OBX-18 of the IHE PCD-04 messages


@pytest.fixture
def prefix() -> str:
    return f"vigil-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server(
    mosquitto: None, sqlite_clinic: Clinic, tmp_path: Path, prefix: str
) -> Iterator[AdapterServer]:
    """The server with both connection-holding adapters: MLLP and MQTT."""
    env = {
        "VIGIL_ADAPTERS": "mllp,mqtt",
        "VIGIL_MLLP_HOST": "127.0.0.1",
        "VIGIL_MLLP_PORT": "0",
        "VIGIL_MLLP_TIMEZONE": "UTC",
        "VIGIL_MQTT_TOPIC_PREFIX": prefix,
        "VIGIL_MQTT_CLIENT_ID": f"vigil-{prefix.rsplit('/', 1)[1]}",
    }
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


def message(name: str) -> bytes:
    return (ALERTS / name).read_bytes()


def control_id(raw: bytes) -> str:
    return str(hl7.parse(raw.decode()).segment("MSH")[10][0])


@contextlib.contextmanager
def screen(server: AdapterServer) -> Iterator[ClientConnection]:
    """The site's nurse-station websocket, past its snapshot."""
    with connect(
        f"{server.ws_url}/ws/sites/{server.clinic.site_id}",
        additional_headers=server.clinic.auth("nurse"),
    ) as ws:
        snapshot(ws)
        yield ws


def session_on(server: AdapterServer, chair_id: int) -> int:
    site = httpx.get(
        f"{server.http_url}/api/v1/sites/{server.clinic.site_id}",
        headers=server.clinic.auth("nurse"),
        timeout=10,
    ).json()
    session_id: int = next(c["session"]["id"] for c in site["chairs"] if c["id"] == chair_id)
    return session_id


def active_alarms(server: AdapterServer, session_id: int) -> dict[str, dict[str, Any]]:
    """The session's active alarms from the alarms API, by rule."""
    response = httpx.get(
        f"{server.http_url}/api/v1/sessions/{session_id}/alarms",
        params={"active": True},
        headers=server.clinic.auth("nurse"),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {alarm["rule_id"]: alarm for alarm in response.json()}


def now() -> str:
    return datetime.now(UTC).isoformat()


def test_two_failed_cuff_cycles_over_mllp_raise_nibp_failed(server: AdapterServer) -> None:
    """PIC iX "NBP MEASURE FAILED" twice (with an update of the first between them): the
    second failure raises nibp_failed (docs/ALARMS.md); a valid reading ends it."""
    chair = server.chair_ids()[1]
    server.register(PICIX_MONITOR, chair, kind="monitor")
    session_id = session_on(server, chair)
    with screen(server) as ws, MllpClient(server.adapter_port("mllp")) as gateway:
        for name in (
            "picix_r40_nbp_measure_failed_1.hl7",
            "picix_r40_nbp_measure_failed_1_continue.hl7",
        ):
            raw = message(name)
            ack = gateway.send(raw)
            code, acked, text = ack_fields(ack)
            assert (code, acked) == ("AA", control_id(raw)), text
            assert "nibp_failed" in text
            # PCD-04's answer to an ORU^R40: ACK^R40^ACK.
            assert str(hl7.parse(ack.decode()).segment("MSH")[9]) == "ACK^R40^ACK"
        # One failed cycle, and an update of that same alert: not two in a row yet.
        assert "nibp_failed" not in active_alarms(server, session_id)

        raw = message("picix_r40_nbp_measure_failed_2.hl7")
        assert ack_fields(gateway.send(raw))[:2] == ("AA", control_id(raw))
        raised = alarm_message(ws, "nibp_failed", "raised")
        alarm = raised["alarm"]
        assert (raised["chair_id"], alarm["session_id"]) == (chair, session_id)
        assert (alarm["kind"], alarm["priority"]) == ("technical", "medium")
        assert active_alarms(server, session_id)["nibp_failed"]["alarm_id"] == alarm["alarm_id"]

        # The next valid reading (any door; here the chair's own monitor over HTTP) ends it.
        response = httpx.post(
            f"{server.http_url}/api/v1/observations",
            json={
                "device_id": server.clinic.device(2),
                "observations": [
                    {"vital": v, "value": x, "unit": "mm[Hg]", "device_time": now()}
                    for v, x in (("nibp_sys", 128), ("nibp_dia", 79), ("nibp_mean", 95))
                ],
            },
            headers=server.clinic.device_auth,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        assert alarm_message(ws, "nibp_failed", "cleared")["alarm"]["alarm_id"] == alarm["alarm_id"]


def test_an_equipment_fault_over_mllp_shows_the_devices_words_until_it_ends(
    server: AdapterServer,
) -> None:
    chair = server.chair_ids()[2]
    server.register(IHE_REPORTER, chair, kind="monitor")
    session_id = session_on(server, chair)
    with screen(server) as ws, MllpClient(server.adapter_port("mllp")) as gateway:
        start = message("ihe_pcd04_equipment_malfunction_start.hl7")
        assert ack_fields(gateway.send(start))[:2] == ("AA", control_id(start))
        raised = alarm_message(ws, "device_fault_197066", "raised")["alarm"]
        assert (raised["kind"], raised["priority"], raised["text"]) == (
            "technical",
            "high",  # the device's PH
            "Power supply problem",
        )
        assert "device_fault_197066" in active_alarms(server, session_id)

        end = message("ihe_pcd04_equipment_malfunction_end.hl7")
        assert ack_fields(gateway.send(end))[:2] == ("AA", control_id(end))
        cleared = alarm_message(ws, "device_fault_197066", "cleared")["alarm"]
        assert cleared["alarm_id"] == raised["alarm_id"]
    assert "device_fault_197066" not in active_alarms(server, session_id)


def test_a_probe_off_alert_over_mqtt_is_the_probe_off_alarm(
    server: AdapterServer, prefix: str
) -> None:
    chair = server.chair_ids()[1]
    server.register("oximeter-7", chair, kind="oximeter")
    session_id = session_on(server, chair)
    device = Device(prefix, "oximeter-7", server.clinic.device_token)
    try:
        with screen(server) as ws:
            body = {"kind": "probe_off", "text": "SpO2 probe off", "device_time": now()}
            device.publish("alerts", json.dumps(device.signed({**body, "ref": 1})))
            answer = device.answers.get(timeout=10)
            assert answer == {
                **answer,
                "ref": 1,
                "status": 200,
                "device_id": "oximeter-7",
                "kind": "probe_off",
                "active": True,
                "chair_id": chair,
            }
            raised = alarm_message(ws, "spo2_probe_off", "raised")["alarm"]
            assert (raised["session_id"], raised["kind"]) == (session_id, "technical")
            assert "spo2_probe_off" in active_alarms(server, session_id)

            ended = {**body, "active": False, "ref": 2, "device_time": now()}
            device.publish("alerts", json.dumps(device.signed(ended)))
            assert device.answers.get(timeout=10)["status"] == 200
            assert (
                alarm_message(ws, "spo2_probe_off", "cleared")["alarm"]["alarm_id"]
                == (raised["alarm_id"])
            )

            # Refused as HTTP refuses: no credential; then a kind that is not one.
            device.publish("alerts", json.dumps({**body, "ref": 3}))
            assert device.answers.get(timeout=10) == {
                "ref": 3,
                "status": 401,
                "detail": "a device credential is required",
                "code": "not_authenticated",
            }
            device.publish("alerts", json.dumps(device.signed({**body, "kind": "on_fire"})))
            refused = device.answers.get(timeout=10)
            assert refused["status"] == 422
            assert [p["loc"] for p in refused["detail"]] == [["body", "kind"]]
    finally:
        device.close()


def post_alert(
    server: AdapterServer, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/api/v1/alerts",
        json=body,
        headers=server.clinic.device_auth if headers is None else headers,
        timeout=10,
    )


def test_an_equipment_fault_over_http_is_a_technical_alarm_in_the_devices_words(
    server: AdapterServer,
) -> None:
    chair = server.chair_ids()[2]
    session_id = session_on(server, chair)
    fault = {
        "device_id": server.clinic.device(3),
        "kind": "equipment_fault",
        "code": "EQUIP_MALF",
        "text": "EQUIP MALFUNCTION",
        "priority": "high",
        "alert_id": "fault-1",
        "device_time": now(),
    }
    with screen(server) as ws:
        answer = post_alert(server, fault)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            **answer.json(),
            "device_id": server.clinic.device(3),
            "kind": "equipment_fault",
            "active": True,
            "chair_id": chair,
        }
        raised = alarm_message(ws, "device_fault_equip_malf", "raised")["alarm"]
        assert (raised["kind"], raised["priority"], raised["text"]) == (
            "technical",
            "high",
            "EQUIP MALFUNCTION",
        )
        stored = active_alarms(server, session_id)["device_fault_equip_malf"]
        assert stored["alarm_id"] == raised["alarm_id"]
        assert stored["text"] == "EQUIP MALFUNCTION"

        # The device says it again while it lasts: still one alarm. Then it ends.
        assert post_alert(server, {**fault, "device_time": now()}).status_code == 200
        ended = {**fault, "active": False, "device_time": now()}
        assert post_alert(server, ended).status_code == 200
        cleared = alarm_message(ws, "device_fault_equip_malf", "cleared")["alarm"]
        assert cleared["alarm_id"] == raised["alarm_id"]
    alarms = httpx.get(
        f"{server.http_url}/api/v1/sessions/{session_id}/alarms",
        headers=server.clinic.auth("nurse"),
        timeout=10,
    ).json()
    assert [a["alarm_id"] for a in alarms if a["rule_id"] == "device_fault_equip_malf"] == [
        raised["alarm_id"]
    ]


def test_the_alert_door_refuses_as_the_observation_door_does(server: AdapterServer) -> None:
    fault = {
        "device_id": server.clinic.device(1),
        "kind": "equipment_fault",
        "text": "EQUIP MALFUNCTION",
        "device_time": now(),
    }
    missing = post_alert(server, {key: v for key, v in fault.items() if key != "text"})
    assert missing.status_code == 422
    assert [p["loc"] for p in missing.json()["detail"]] == [["body", "text"]]
    wrong = post_alert(server, {**fault, "priority": "urgent", "device_time": "10:15"})
    assert wrong.status_code == 422
    assert sorted(tuple(p["loc"]) for p in wrong.json()["detail"]) == [
        ("body", "device_time"),
        ("body", "priority"),
    ]
    assert post_alert(server, fault, headers={}).status_code == 401
    assert post_alert(server, {**fault, "device_id": "nobody-here"}).status_code == 404
    # A credential of one device may not speak for another.
    server.register("oximeter-9", server.chair_ids()[0], kind="oximeter")
    _, own_token = server.issue_credential("oximeter-9")
    other = post_alert(server, fault, headers={"Authorization": f"Bearer {own_token}"})
    assert other.status_code == 403, other.text


def test_the_websocket_ingest_takes_alerts_beside_batches(server: AdapterServer) -> None:
    chair = server.chair_ids()[0]
    session_id = session_on(server, chair)
    with (
        screen(server) as ws,
        connect(f"{server.ws_url}/ws/ingest", additional_headers=server.clinic.device_auth) as dev,
    ):
        alert = {
            "type": "alert",
            "ref": "a1",
            "device_id": server.clinic.device(1),
            "kind": "probe_off",
            "text": "SpO2 PROBE OFF",
            "device_time": now(),
        }
        dev.send(json.dumps(alert))
        answer = json.loads(dev.recv(timeout=10))
        assert answer == {
            **answer,
            "type": "alert_accepted",
            "ref": "a1",
            "status": 200,
            "kind": "probe_off",
            "chair_id": chair,
        }
        raised = alarm_message(ws, "spo2_probe_off", "raised")["alarm"]
        assert raised["session_id"] == session_id

        # A batch on the same connection: an SpO2 value without the flag ends probe off.
        batch = {
            "ref": "b1",
            "device_id": server.clinic.device(1),
            "observations": [{"vital": "spo2", "value": 97, "unit": "%", "device_time": now()}],
        }
        dev.send(json.dumps(batch))
        assert json.loads(dev.recv(timeout=10))["type"] == "accepted"
        assert (
            alarm_message(ws, "spo2_probe_off", "cleared")["alarm"]["alarm_id"]
            == (raised["alarm_id"])
        )

        dev.send(json.dumps({**alert, "type": "telepathy", "ref": "x"}))
        error = json.loads(dev.recv(timeout=10))
        assert (error["type"], error["ref"], error["status"]) == ("error", "x", 422)
        assert error["detail"][0]["loc"] == ["body", "type"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_device_fault_survives_a_restart_and_ends_when_the_device_says_so(
    live_server: LiveServer, clinic: Clinic, settings: Settings
) -> None:
    fault = {
        "device_id": clinic.device(2),
        "kind": "equipment_fault",
        "code": "BATT_LOW",
        "text": "Battery low",
        "priority": "low",
        "device_time": now(),
    }
    url = f"{live_server.ws_url}/ws/sites/{clinic.site_id}"
    with connect(url, additional_headers=clinic.auth()) as ws:
        snapshot(ws)
        posted = httpx.post(
            f"{live_server.http_url}/api/v1/alerts", json=fault, headers=clinic.device_auth
        )
        assert posted.status_code == 200, posted.text
        raised = alarm_message(ws, "device_fault_batt_low", "raised")["alarm"]
    assert (raised["priority"], raised["text"]) == ("low", "Battery low")
    live_server.stop()

    restarted = LiveServer(create_app(settings))
    restarted.start()
    try:
        with connect(
            f"{restarted.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
        ) as ws:
            chairs = snapshot(ws)["chairs"]
            restored = {a["alarm_id"]: a for chair in chairs for a in chair["alarms"]}
            assert restored[raised["alarm_id"]] == raised
            ended = {**fault, "active": False, "device_time": now()}
            posted = httpx.post(
                f"{restarted.http_url}/api/v1/alerts", json=ended, headers=clinic.device_auth
            )
            assert posted.status_code == 200, posted.text
            cleared = alarm_message(ws, "device_fault_batt_low", "cleared")["alarm"]
            assert cleared["alarm_id"] == raised["alarm_id"]
    finally:
        restarted.stop()
