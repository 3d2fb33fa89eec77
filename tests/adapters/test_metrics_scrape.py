"""GET /metrics scraped from a real server under load: devices post over HTTP, the ingest
websocket, MLLP and MQTT at once, a screen watches, an alarm is raised; every counter must
have moved by exactly what was done, and the histograms must hold each commit and send."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from tests.adapters.conftest import MLLP_ENV, AdapterServer, MllpClient, start_adapter_server
from tests.adapters.test_hl7_mllp import HR, SPO2, oru
from tests.adapters.test_mqtt import Device
from tests.conftest import Clinic

TOKEN = "scrape-me"
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: AdapterServer) -> Series:
    response = httpx.get(
        f"{server.http_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Series, after: Series, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def readings(start: datetime, count: int, vital: str = "hr") -> list[dict[str, Any]]:
    units = {"hr": "/min", "spo2": "%", "pr": "/min"}
    return [
        {
            "vital": vital,
            "value": 70 + i % 5 if vital != "spo2" else 97,
            "unit": units[vital],
            "device_time": (start + timedelta(milliseconds=100 * i)).isoformat(),
        }
        for i in range(count)
    ]


class Screen:
    """A nurse's screen on the site's live feed, read on a thread of its own."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        first = json.loads(self.ws.recv(timeout=5))
        assert first["type"] == "snapshot"
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for text in self.ws:
                with self._lock:
                    self.messages.append(json.loads(text))
        except Exception:  # closed
            return

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(1 for message in self.messages if message["type"] == kind)

    def raised(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        with self._lock:
            for message in self.messages:
                if message["type"] == "alarm" and message["event"] == "raised":
                    key = (message["alarm"]["priority"], message["alarm"]["kind"])
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def close(self) -> None:
        self.ws.close()
        self._reader.join(timeout=5)


@contextlib.contextmanager
def watching(server: AdapterServer) -> Iterator[Screen]:
    url = f"{server.ws_url}/ws/sites/{server.clinic.site_id}"
    with connect(url, additional_headers=server.clinic.auth()) as ws:
        screen = Screen(ws)
        try:
            yield screen
        finally:
            screen.close()


@pytest.fixture
def prefix() -> str:
    """MQTT topics of this test alone: the broker is shared."""
    return f"vigil-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server(
    mosquitto: None, sqlite_clinic: Clinic, tmp_path: Path, prefix: str
) -> Iterator[AdapterServer]:
    env = {
        **MLLP_ENV,
        "VIGIL_ADAPTERS": "mllp,mqtt",
        "VIGIL_MQTT_TOPIC_PREFIX": prefix,
        "VIGIL_MQTT_CLIENT_ID": f"vigil-{prefix.rsplit('/', 1)[1]}",
        "VIGIL_METRICS_TOKEN": TOKEN,
    }
    yield from start_adapter_server(sqlite_clinic, tmp_path, env)


def wait_for(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_counters_move_by_what_the_doors_did(server: AdapterServer, prefix: str) -> None:
    clinic = server.clinic
    base = server.http_url
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "alarm_tick", "adapter:mllp", "adapter:mqtt"}
    chairs = server.chair_ids()
    mllp_device = f"00AABB{uuid.uuid4().hex[:10].upper()}"
    server.register(mllp_device, chairs[1])
    server.register("oximeter-m", chairs[2], kind="oximeter")
    mqtt = Device(prefix, "oximeter-m", clinic.device_token)
    with watching(server) as screen:
        do_and_count(server, screen, mqtt, mllp_device)
    wait_for(lambda: value(scrape(server), "vigil_live_websocket_clients") == 0, "no screen")


def do_and_count(server: AdapterServer, screen: Screen, mqtt: Device, mllp_device: str) -> None:
    """Send through every door while `screen` watches; check what the scrapes say."""
    clinic = server.clinic
    base = server.http_url
    before = scrape(server)
    assert value(before, "vigil_live_websocket_clients") == 1

    # --- HTTP under load: three devices at once, 30 batches of 3 readings each -----------
    start = datetime.now(UTC) - timedelta(seconds=60)
    statuses: list[int] = []

    def post_many(device: str) -> None:
        with httpx.Client(base_url=base, headers=clinic.device_auth, timeout=10) as client:
            for i in range(30):
                at = start + timedelta(seconds=i)
                body = {"device_id": device, "observations": readings(at, 3)}
                statuses.append(client.post("/api/v1/observations", json=body).status_code)

    posters = [threading.Thread(target=post_many, args=(clinic.device(i),)) for i in (1, 2, 3)]
    for poster in posters:
        poster.start()

    # --- meanwhile, the other doors -------------------------------------------------------
    # The ingest websocket: two batches of 2, and one message that is not JSON.
    ws_url = f"{server.ws_url}/ws/ingest"
    with connect(ws_url, additional_headers=clinic.device_auth) as stream:
        for i in range(2):
            at = start + timedelta(seconds=10 * i)
            stream.send(
                json.dumps({"device_id": clinic.device(2), "observations": readings(at, 2, "pr")})
            )
            assert json.loads(stream.recv(timeout=10))["status"] == 201
        stream.send("not json")
        assert json.loads(stream.recv(timeout=10))["status"] == 400
    # MLLP: one ORU^R01 with two vitals, and one message that is not HL7.
    with MllpClient(server.adapter_port("mllp")) as mllp:
        ack = mllp.send(oru("M1", "1|" + HR.format(72), "2|" + SPO2.format(98), device=mllp_device))
        assert b"|AA|" in ack, ack
        nack = mllp.send("this is not HL7")
        assert b"|AA|" not in nack, nack
    # MQTT: one batch of two, and one payload that is not JSON.
    try:
        assert mqtt.send({"observations": readings(start, 2, "spo2")})["status"] == 201
        assert mqtt.send(b"{not json")["status"] == 400
    finally:
        mqtt.close()

    # --- refusals at the HTTP door --------------------------------------------------------
    url = f"{base}/api/v1/observations"
    one = readings(datetime.now(UTC), 1)
    wrong_token = httpx.post(
        url,
        json={"device_id": clinic.device(1), "observations": readings(start, 2)},
        headers={"Authorization": "Bearer vgd_not-a-credential"},
    )
    assert wrong_token.status_code == 401
    implausible = [{**one[0], "vital": "spo2", "unit": "%", "value": 101}]
    too_high = httpx.post(
        url,
        json={"device_id": clinic.device(1), "observations": implausible},
        headers=clinic.device_auth,
    )
    assert too_high.status_code == 422
    shapeless = httpx.post(url, json={"device_id": clinic.device(1)}, headers=clinic.device_auth)
    assert shapeless.status_code == 422
    ghost = httpx.post(
        url, json={"device_id": "ghost", "observations": one}, headers=clinic.device_auth
    )
    assert ghost.status_code == 404

    # --- an alarm: 20 s of SpO2 at 88 on the third chair (past the 15 s delay) -----------
    end = datetime.now(UTC)
    trace = [
        {
            "vital": "spo2",
            "value": 97 if i < 5 else 88,
            "unit": "%",
            "device_time": (end - timedelta(seconds=24 - i)).isoformat(),
        }
        for i in range(25)
    ]
    alarm_post = httpx.post(
        url, json={"device_id": clinic.device(3), "observations": trace}, headers=clinic.device_auth
    )
    assert alarm_post.status_code == 201, alarm_post.text
    for poster in posters:
        poster.join(timeout=60)
    assert statuses == [201] * 90
    wait_for(lambda: screen.raised().get(("high", "physiological")), "the alarm on the screen")

    # Every sample batch is on the screen: 90 + the alarm trace over HTTP, 2 over the ingest
    # websocket, 1 over MLLP, 1 over MQTT (each device is bound to a chair in a session).
    wait_for(lambda: screen.count("samples") == 95, "every batch on the screen")
    # Then a resync the screen asks for.
    screen.ws.send(json.dumps({"type": "resync"}))
    wait_for(lambda: screen.count("resync") == 1, "the resync")
    time.sleep(0.3)
    after = scrape(server)

    def messages(door: str, outcome: str) -> float:
        return moved(before, after, "vigil_ingest_messages_total", door=door, outcome=outcome)

    def samples(door: str, outcome: str) -> float:
        return moved(before, after, "vigil_ingest_samples_total", door=door, outcome=outcome)

    # Messages, by door and outcome.
    assert messages("http", "accepted") == 91
    assert messages("http", "credential") == 1
    assert messages("http", "invalid") == 2  # an implausible value, a body without readings
    assert messages("http", "unknown_device") == 1
    assert (messages("ws", "accepted"), messages("ws", "invalid")) == (2, 1)
    assert (messages("mllp", "accepted"), messages("mllp", "invalid")) == (1, 1)
    assert (messages("mqtt", "accepted"), messages("mqtt", "invalid")) == (1, 1)
    # Samples of the batches that reached ingest, by the door they came by.
    assert samples("http", "accepted") == 90 * 3 + 25
    assert samples("http", "credential") == 2
    assert samples("http", "invalid") == 1
    assert samples("http", "unknown_device") == 1
    assert samples("ws", "accepted") == 4
    assert samples("mllp", "accepted") == 2
    assert samples("mqtt", "accepted") == 2
    # Group commits: every batch that reached the writer (stored, or refused there for its
    # credential or device) is in exactly one group; each group is one timed commit.
    in_groups = moved(before, after, "vigil_ingest_commit_group_batches_sum")
    assert in_groups == (91 + 2 + 1 + 1) + 2  # the accepted ones, then the two refused there
    groups = moved(before, after, "vigil_ingest_commit_group_batches_count")
    assert 1 <= groups <= in_groups
    assert moved(before, after, "vigil_ingest_commit_seconds_count") == groups
    assert moved(before, after, "vigil_ingest_commit_seconds_sum") > 0
    assert value(after, "vigil_ingest_batches_waiting") == 0
    # Device → screen: one observation per samples message this screen was sent.
    assert moved(before, after, "vigil_live_device_to_screen_seconds_count") == screen.count(
        "samples"
    )
    assert moved(before, after, "vigil_live_device_to_screen_seconds_sum") > 0
    assert moved(before, after, "vigil_live_resyncs_total") == screen.count("resync") == 1
    # Alarms raised, by priority and kind, exactly as the screen saw them raised.
    for (priority, kind), count in screen.raised().items():
        assert moved(before, after, "vigil_alarms_raised_total", priority=priority, kind=kind) == (
            count
        )
    assert moved(before, after, "vigil_alarms_raised_total", priority="high", kind="physiological")
    # State read at the scrape.
    assert value(after, "vigil_live_websocket_clients") == 1
    assert 0 <= value(after, "vigil_alarm_tick_age_seconds") < 2
    assert value(after, "vigil_database_up") == 1
    for adapter in ("mllp", "mqtt"):
        assert value(after, "vigil_adapter_state", adapter=adapter, state="connected") == 1
        assert value(after, "vigil_adapter_state", adapter=adapter, state="disconnected") == 0
    # Devices by link state: the websocket's and MLLP's connections closed, MQTT's is up.
    wait_for(
        lambda: value(scrape(server), "vigil_device_links", state="disconnected") == 2,
        "the closed links",
    )
    links = scrape(server)
    assert value(links, "vigil_device_links", state="connected") == 1
