"""WS /ws/ingest with a real websocket client: a device that keeps one connection open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

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


def ingest(server: AdapterServer, headers: dict[str, str] | None = None) -> ClientConnection:
    """A device's connection to /ws/ingest, with the site's gateway credential by default."""
    credential = server.clinic.device_auth if headers is None else headers
    return connect(f"{server.ws_url}/ws/ingest", additional_headers=credential)


def exchange(ws: Any, body: Any) -> dict[str, Any]:
    ws.send(body if isinstance(body, str) else json.dumps(body))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


def test_a_stream_of_batches_is_stored_and_answered_in_order(server: AdapterServer) -> None:
    device = server.clinic.device(2)
    with ingest(server) as ws:
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
    over_http = httpx.post(
        f"{server.http_url}/api/v1/observations",
        json=bad,
        headers=server.clinic.device_auth,
        timeout=10,
    )
    with ingest(server) as ws:
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
    with ingest(server) as ws:
        exchange(ws, {"device_id": device, "observations": [reading("spo2", 98, "%")]})
        up = server.recorder.wait_for_link(device, ConnectionState.CONNECTED)
        assert (up.adapter, up.chair_id, up.site_id) == ("websocket", chair, server.clinic.site_id)
    down = server.recorder.wait_for_link(device, ConnectionState.DISCONNECTED)
    assert (down.chair_id, down.reason) == (chair, "websocket closed")


def test_streamed_samples_reach_the_nurse_station(server: AdapterServer) -> None:
    device = server.clinic.device(1)
    site = f"{server.ws_url}/ws/sites/{server.clinic.site_id}"
    with connect(site, additional_headers=server.clinic.auth("nurse")) as screen:
        assert json.loads(screen.recv(timeout=5))["type"] == "snapshot"
        with ingest(server) as ws:
            exchange(ws, {"device_id": device, "observations": [reading("spo2", 91, "%")]})
        while (message := json.loads(screen.recv(timeout=5)))["type"] != "samples":
            assert message["type"] == "heartbeat"
    assert [(s["vital"], s["value"]) for s in message["samples"]] == [("spo2", 91)]


def test_a_handshake_without_a_live_device_credential_is_refused(server: AdapterServer) -> None:
    for headers in (
        {},
        {"Authorization": "Basic bm9ib2R5OnNlY3JldA=="},
        {"Authorization": "Bearer vgd_unknown"},
        server.clinic.auth("admin"),  # a person's token is no device credential
    ):
        with pytest.raises(InvalidStatus) as refused:
            ingest(server, headers)
        assert refused.value.response.status_code == 403
    assert stored(server, server.clinic.device(1)) == []


def test_each_batch_is_checked_against_its_credential(server: AdapterServer) -> None:
    device, other = server.clinic.device(1), server.clinic.device(2)
    batch = {"device_id": device, "observations": [reading("hr", 68, "/min")]}

    credential_id, token = server.issue_credential(device)
    with ingest(server, {"Authorization": f"Bearer {token}"}) as ws:
        assert exchange(ws, batch)["status"] == 201
        foreign = exchange(ws, {**batch, "device_id": other})
        assert (foreign["type"], foreign["status"], foreign["code"]) == ("error", 403, "forbidden")
        # Revoked while connected: the very next batch is refused.
        server.revoke_credential(credential_id)
        assert exchange(ws, batch)["status"] == 401
    assert [x for _, x, _ in stored(server, device)] == [68]
    assert stored(server, other) == []
