"""Issue 15 at every device door: a resend is stored once (websocket, MQTT, MLLP), the answer
depends on the commit only (MLLP), and a full writer queue is refused with the reason."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from app.events import StoredBatch
from app.ingest.service import IngestService
from tests.adapters.conftest import (
    MLLP_ENV,
    AdapterServer,
    MllpClient,
    ack_fields,
    start_adapter_server,
    stored,
)
from tests.adapters.test_hl7_mllp import HR, oru
from tests.adapters.test_mqtt import Device
from tests.conftest import Clinic
from tests.test_group_commit import write_lock_held

URL = "/api/v1/observations"


def reading(vital: str, value: float, unit: str, at: datetime) -> dict[str, Any]:
    return {"vital": vital, "value": value, "unit": unit, "device_time": at.isoformat()}


@pytest.fixture
def server(sqlite_clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    """The server with its websocket door and the MLLP listener."""
    yield from start_adapter_server(sqlite_clinic, tmp_path, MLLP_ENV)


def test_a_websocket_resend_is_answered_as_duplicates(server: AdapterServer) -> None:
    device = server.clinic.device(2)
    at = datetime.now(UTC)
    batch = {"device_id": device, "observations": [reading("hr", 70, "/min", at)]}
    with connect(f"{server.ws_url}/ws/ingest", additional_headers=server.clinic.device_auth) as ws:
        answers = []
        for ref in (1, 2):
            ws.send(json.dumps({"ref": ref, **batch}))
            answers.append(json.loads(ws.recv(timeout=10)))
    assert [(a["ref"], a["status"], a["stored"], a["duplicates"]) for a in answers] == [
        (1, 201, 1, 0),
        (2, 201, 0, 1),
    ]
    assert stored(server, device) == [("hr", 70, 0)]


def test_an_hl7_resend_is_stored_once_even_when_the_resend_cache_forgot_it(
    server: AdapterServer,
) -> None:
    """A gateway that lost our ACK may send the same observations again under a new MSH-10
    (after its own restart, or long after): not the same bytes, so the resend cache cannot
    know it; the samples' own uniqueness does."""
    device = "0011223344556677"
    server.register(device, server.chair_ids()[0])
    at = datetime.now(UTC) - timedelta(seconds=2)
    with MllpClient(server.adapter_port("mllp")) as client:
        first = ack_fields(client.send(oru("r-1", f"1|{HR.format(75)}", device=device, at=at)))
        again = ack_fields(client.send(oru("r-2", f"1|{HR.format(75)}", device=device, at=at)))
    assert first[0] == "AA", first
    assert (again[0], again[1]) == ("AA", "r-2"), again
    assert "stored 0 values" in again[2]
    assert "1 values already stored" in again[2]
    assert stored(server, device) == [("hr", 75, 0)]


class Raiser:
    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    async def __call__(self, batch: StoredBatch) -> None:
        with self._lock:
            self.calls += 1
        raise RuntimeError("a subscriber that breaks")


def test_a_failing_subscriber_does_not_turn_a_stored_hl7_message_into_a_nack(
    server: AdapterServer,
) -> None:
    ingest: IngestService = server.live.app.state.ingest
    raiser = Raiser()
    ingest.committed.subscribe(raiser)
    device = "0011223344556688"
    server.register(device, server.chair_ids()[1])
    with MllpClient(server.adapter_port("mllp")) as client:
        code, _, text = ack_fields(client.send(oru("f-1", f"1|{HR.format(88)}", device=device)))
    assert (code, "stored 1 values" in text) == ("AA", True), text
    assert stored(server, device) == [("hr", 88, 0)]
    deadline = time.monotonic() + 5
    while raiser.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert raiser.calls >= 1, "the subscriber was called, after the answer"


@pytest.fixture
def crowded_server(clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    """Room for one waiting batch only."""
    yield from start_adapter_server(clinic, tmp_path, {**MLLP_ENV, "VIGIL_INGEST_QUEUE_LIMIT": "1"})


# PostgreSQL: with the write lock held there, the other doors' reads (the MLLP device lookup,
# the websocket's credential) go on; SQLite runs all of a server's database work on one
# thread, which would wait behind the writer.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_full_queue_is_refused_with_the_reason_on_every_door(
    crowded_server: AdapterServer,
) -> None:
    server, clinic = crowded_server, crowded_server.clinic
    ingest: IngestService = server.live.app.state.ingest
    device = "0011223344556699"
    server.register(device, server.chair_ids()[2])
    now = datetime.now(UTC)

    def body(value: float, seconds_ago: float) -> dict[str, Any]:
        at = now - timedelta(seconds=seconds_ago)
        return {"device_id": clinic.device(1), "observations": [reading("hr", value, "/min", at)]}

    async def fill_then_knock(release: Any) -> tuple[list[httpx.Response], Any, Any, Any]:
        async with httpx.AsyncClient(
            base_url=server.http_url, timeout=30, headers=clinic.device_auth
        ) as client:
            in_flight = asyncio.ensure_future(client.post(URL, json=body(61, 3)))
            await asyncio.sleep(0.3)  # its transaction waits for the database's lock
            waiting = asyncio.ensure_future(client.post(URL, json=body(62, 2)))
            for _ in range(500):  # the server's thread queues it; poll, bounded
                if ingest.waiting >= 1:
                    break
                await asyncio.sleep(0.01)
            refused_http = await client.post(URL, json=body(63, 1))
            refused_ws, refused_mllp = await asyncio.gather(
                asyncio.to_thread(knock_websocket), asyncio.to_thread(knock_mllp)
            )
            release()
            return [await in_flight, await waiting], refused_http, refused_ws, refused_mllp

    def knock_websocket() -> dict[str, Any]:
        with connect(f"{server.ws_url}/ws/ingest", additional_headers=clinic.device_auth) as ws:
            ws.send(json.dumps({"ref": "w", **body(64, 0.5)}))
            answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
            return answer

    def knock_mllp() -> tuple[str, str, str]:
        with MllpClient(server.adapter_port("mllp")) as client:
            return ack_fields(client.send(oru("busy-1", f"1|{HR.format(65)}", device=device)))

    with write_lock_held(clinic.url) as release:
        taken, refused_http, refused_ws, refused_mllp = asyncio.run(fill_then_knock(release))

    assert [r.status_code for r in taken] == [201, 201]
    assert (refused_http.status_code, refused_http.headers["retry-after"]) == (503, "1")
    assert (refused_ws["type"], refused_ws["ref"], refused_ws["status"]) == ("error", "w", 503)
    assert (refused_ws["code"], refused_ws["retry_after_s"]) == ("overloaded", 1)
    code, acked, text = refused_mllp
    assert (code, acked) == ("AE", "busy-1")
    assert "busy" in text
    assert "send it again" in text
    assert [value for _, value, _ in stored(server, clinic.device(1))] == [61, 62]
    assert stored(server, device) == []


def test_an_mqtt_redelivery_is_stored_once(
    mosquitto: None, sqlite_clinic: Clinic, tmp_path: Path
) -> None:
    """QoS 1 delivers at least once: the broker sends a batch again when Vigil's PUBACK was
    lost. The same message published twice is what Vigil then sees."""
    prefix = f"vigil-test/redelivery-{time.monotonic_ns()}"
    env = {
        "VIGIL_ADAPTERS": "mqtt",
        "VIGIL_MQTT_TOPIC_PREFIX": prefix,
        "VIGIL_MQTT_CLIENT_ID": f"vigil-redelivery-{time.monotonic_ns()}",
        "VIGIL_MQTT_RECONNECT_MIN_S": "0.2",
    }
    for server in start_adapter_server(sqlite_clinic, tmp_path, env):
        device_id = sqlite_clinic.device(3)
        device = Device(prefix, device_id, sqlite_clinic.device_token)
        try:
            at = datetime.now(UTC)
            batch = {"ref": 9, "observations": [reading("spo2", 95, "%", at)]}
            answers = [device.send(batch), device.send(batch)]
        finally:
            device.close()
        assert [(a["ref"], a["status"], a["stored"], a["duplicates"]) for a in answers] == [
            (9, 201, 1, 0),
            (9, 201, 0, 1),
        ]
        assert stored(server, device_id) == [("spo2", 95, 0)]
