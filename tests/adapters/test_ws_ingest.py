"""WS /ws/ingest with a real websocket client: a device that keeps one connection open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from app.adapters.events import ConnectionState
from tests.adapters.conftest import AdapterServer, start_adapter_server, stored
from tests.conftest import Clinic


@pytest.fixture
def server(sqlite_clinic: Clinic, tmp_path: Path) -> Iterator[AdapterServer]:
    yield from start_adapter_server(sqlite_clinic, tmp_path, {"VIGIL_ADAPTERS": ""})


def reading(vital: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "vital": vital,
        "value": value,
        "unit": unit,
        "device_time": datetime.now(UTC).isoformat(),
    }


def exchange(ws: Any, body: Any) -> dict[str, Any]:
    ws.send(body if isinstance(body, str) else json.dumps(body))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


def test_a_stream_of_batches_is_stored_and_answered_in_order(server: AdapterServer) -> None:
    device = server.clinic.device(2)
    with connect(f"{server.ws_url}/ws/ingest") as ws:
        for ref in range(5):
            body = {
                "ref": ref,
                "device_id": device,
                "observations": [reading("hr", 70 + ref, "/min")],
            }
            ws.send(json.dumps(body))
        answers = [json.loads(ws.recv(timeout=10)) for _ in range(5)]
    assert [(a["type"], a["ref"], a["status"], a["accepted"]) for a in answers] == [
        ("accepted", ref, 201, 1) for ref in range(5)
    ]
    assert answers[0]["chair_id"] == server.chair_ids()[1]
    assert answers[0]["received_time"].endswith("Z")
    assert [x for _, x, _ in stored(server, device)] == [70, 71, 72, 73, 74]


def test_errors_are_the_ones_http_gives_and_the_connection_stays(server: AdapterServer) -> None:
    device = server.clinic.device(1)
    bad = {"device_id": device, "observations": [reading("nibp_sys", 400, "mm[Hg]")]}
    over_http = httpx.post(f"{server.http_url}/api/v1/observations", json=bad, timeout=10)
    with connect(f"{server.ws_url}/ws/ingest") as ws:
        assert exchange(ws, {**bad, "ref": "b1"}) == {
            "type": "error",
            "ref": "b1",
            "status": over_http.status_code,
            **over_http.json(),
        }
        assert exchange(ws, "not json")["status"] == 400
        assert exchange(ws, [1, 2])["status"] == 422
        unknown = exchange(ws, {"device_id": "ghost", "observations": [reading("hr", 1, "/min")]})
        assert (unknown["status"], unknown["code"]) == (404, "not_found")
        extra = exchange(ws, {"device_id": device, "observations": [], "colour": "red"})
        assert {tuple(p["loc"]) for p in extra["detail"]} == {
            ("body", "observations"),
            ("body", "colour"),
        }
        assert (
            exchange(ws, {"device_id": device, "observations": [reading("hr", 64, "/min")]})[
                "status"
            ]
            == 201
        )


def test_the_connection_is_a_device_link(server: AdapterServer) -> None:
    device = server.clinic.device(3)
    chair = server.chair_ids()[2]
    with connect(f"{server.ws_url}/ws/ingest") as ws:
        exchange(ws, {"device_id": device, "observations": [reading("spo2", 98, "%")]})
        up = server.recorder.wait_for_link(device, ConnectionState.CONNECTED)
        assert (up.adapter, up.chair_id, up.site_id) == ("websocket", chair, server.clinic.site_id)
    down = server.recorder.wait_for_link(device, ConnectionState.DISCONNECTED)
    assert (down.chair_id, down.reason) == (chair, "websocket closed")


def test_streamed_samples_reach_the_nurse_station(server: AdapterServer) -> None:
    device = server.clinic.device(1)
    with connect(f"{server.ws_url}/ws/sites/{server.clinic.site_id}") as screen:
        assert json.loads(screen.recv(timeout=5))["type"] == "snapshot"
        with connect(f"{server.ws_url}/ws/ingest") as ws:
            exchange(ws, {"device_id": device, "observations": [reading("spo2", 91, "%")]})
        while (message := json.loads(screen.recv(timeout=5)))["type"] != "samples":
            assert message["type"] == "heartbeat"
    assert [(s["vital"], s["value"]) for s in message["samples"]] == [("spo2", 91)]
