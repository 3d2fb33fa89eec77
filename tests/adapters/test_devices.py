"""The device registry API, on SQLite and PostgreSQL: register, list, bind, unbind.

The registry is the admin's: `client` is signed in as the clinic's admin, and devices
send with their own credential or their site's gateway credential.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from tests.conftest import Clinic, LiveServer

BED = "bed:HO Surgery/OR/1"


@pytest.fixture
def client(app: FastAPI, clinic: Clinic) -> Iterator[TestClient]:
    """Signed in as the admin: each request carries the admin's token unless it says otherwise."""
    with TestClient(app, headers=clinic.auth("admin")) as test_client:
        yield test_client


def chairs(client: TestClient, clinic: Clinic) -> list[dict[str, Any]]:
    chairs_: list[dict[str, Any]] = client.get(f"/api/v1/sites/{clinic.site_id}").json()["chairs"]
    return chairs_


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def own_credential(client: TestClient, device: str) -> dict[str, str]:
    """Headers with a credential bound to `device` alone, issued by the admin."""
    issued = client.post(
        "/api/v1/device-credentials", json={"label": f"tests {device}", "device_id": device}
    )
    assert issued.status_code == 201, issued.text
    return bearer(issued.json()["token"])


def send_hr(
    client: TestClient, device: str, value: float, credential: dict[str, str]
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/api/v1/observations",
        json={
            "device_id": device,
            "observations": [
                {
                    "vital": "hr",
                    "value": value,
                    "unit": "/min",
                    "device_time": datetime.now(UTC).isoformat(),
                }
            ],
        },
        headers=credential,
    )
    return response


def post_hr(
    client: TestClient, device: str, value: float, credential: dict[str, str]
) -> dict[str, Any]:
    response = send_hr(client, device, value, credential)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_register_list_and_get(client: TestClient, clinic: Clinic) -> None:
    created = client.post("/api/v1/devices", json={"identifier": BED, "kind": "bed"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["identifier"], body["kind"], body["chair_id"]) == (BED, "bed", None)
    assert body["last_received_time"] is None
    assert body["unbound_samples"] == 0

    listed = client.get("/api/v1/devices").json()
    assert [d["identifier"] for d in listed] == sorted(
        [BED, clinic.device(1), clinic.device(2), clinic.device(3)]
    )
    assert [d["identifier"] for d in client.get("/api/v1/devices?unbound=true").json()] == [BED]
    demo = client.get(f"/api/v1/devices/{clinic.device(1)}").json()
    assert demo["chair_name"] == "Chair 1"
    assert demo["site_id"] == clinic.site_id
    assert client.get(f"/api/v1/devices/{BED}").json()["identifier"] == BED


def test_registration_is_refused_with_reasons(client: TestClient, clinic: Clinic) -> None:
    again = client.post("/api/v1/devices", json={"identifier": clinic.device(1)})
    assert (again.status_code, again.json()["code"]) == (409, "conflict")
    no_chair = client.post("/api/v1/devices", json={"identifier": "x-1", "chair_id": 9999})
    assert (no_chair.status_code, no_chair.json()["detail"]) == (404, "unknown chair 9999")
    bad = client.post("/api/v1/devices", json={"identifier": "line\nbreak"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "identifier"]
    missing = client.get("/api/v1/devices/nobody")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    unbind_missing = client.delete("/api/v1/devices/nobody/binding")
    assert unbind_missing.status_code == 404


def test_the_registry_is_for_admins_only(client: TestClient, clinic: Clinic) -> None:
    for who in ("nurse", "clinician"):
        listed = client.get("/api/v1/devices", headers=clinic.auth(who))
        assert listed.status_code == 403, who
        created = client.post("/api/v1/devices", json={"identifier": BED}, headers=clinic.auth(who))
        assert created.status_code == 403, who
        assert client.get("/api/v1/unbound-samples", headers=clinic.auth(who)).status_code == 403
    anonymous = client.get("/api/v1/devices", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    # A device credential is no sign-in for the registry either.
    assert client.get("/api/v1/devices", headers=clinic.device_auth).status_code == 401
    assert client.get(f"/api/v1/devices/{BED}").status_code == 404  # nothing was registered


def test_the_binding_decides_which_session_a_sample_joins(
    client: TestClient, clinic: Clinic
) -> None:
    chair_2, chair_3 = chairs(client, clinic)[1:3]
    created = client.post("/api/v1/devices", json={"identifier": BED, "chair_id": chair_2["id"]})
    assert created.json()["chair_name"] == "Chair 2"

    # Bound to a chair of the site: the site's gateway credential may send for it.
    first = post_hr(client, BED, 70, clinic.device_auth)
    assert (first["chair_id"], first["session_id"]) == (chair_2["id"], chair_2["session"]["id"])

    unbound = client.delete(f"/api/v1/devices/{BED}/binding")
    assert unbound.status_code == 200
    assert unbound.json()["chair_id"] is None
    # Unbound, it belongs to no site: only a credential of its own may send for it.
    assert send_hr(client, BED, 71, clinic.device_auth).status_code == 403
    second = post_hr(client, BED, 71, own_credential(client, BED))
    assert (second["chair_id"], second["session_id"]) == (None, None)

    rebound = client.put(f"/api/v1/devices/{BED}/binding", json={"chair_id": chair_3["id"]})
    assert rebound.json()["chair_id"] == chair_3["id"]
    third = post_hr(client, BED, 72, clinic.device_auth)
    assert (third["chair_id"], third["session_id"]) == (chair_3["id"], chair_3["session"]["id"])

    nowhere = client.put(f"/api/v1/devices/{BED}/binding", json={"chair_id": 9999})
    assert nowhere.status_code == 404
    assert client.get(f"/api/v1/devices/{BED}").json()["chair_id"] == chair_3["id"]


def test_unbound_samples_are_kept_and_shown_to_an_admin(client: TestClient, clinic: Clinic) -> None:
    client.post("/api/v1/devices", json={"identifier": "spare-oximeter", "kind": "oximeter"})
    spare = own_credential(client, "spare-oximeter")
    post_hr(client, "spare-oximeter", 60, spare)
    post_hr(client, "spare-oximeter", 61, spare)
    post_hr(client, clinic.device(1), 90, clinic.device_auth)  # bound: not in the list

    samples = client.get("/api/v1/unbound-samples").json()
    assert [(s["device_id"], s["value"]) for s in samples] == [
        ("spare-oximeter", 61),
        ("spare-oximeter", 60),
    ]
    assert samples[0]["quality"] == ["unbound"]
    assert samples[0]["unit"] == "/min"
    page = client.get(f"/api/v1/unbound-samples?before_id={samples[0]['id']}").json()
    assert [s["value"] for s in page] == [60]
    one = client.get("/api/v1/devices/spare-oximeter/unbound-samples?limit=1").json()
    assert [s["value"] for s in one] == [61]

    device = client.get("/api/v1/devices/spare-oximeter").json()
    assert device["unbound_samples"] == 2
    assert device["last_received_time"] is not None
    # Binding later does not rewrite history: the old samples stay flagged.
    client.put(
        "/api/v1/devices/spare-oximeter/binding", json={"chair_id": chairs(client, clinic)[0]["id"]}
    )
    assert client.get("/api/v1/devices/spare-oximeter").json()["unbound_samples"] == 2


def test_a_binding_change_resyncs_the_site_screens(live_server: LiveServer, clinic: Clinic) -> None:
    # A real server and websocket client: the in-process TestClient cancels the app's
    # task when a websocket session closes, which is not what a screen does.
    base = live_server.http_url
    admin = clinic.auth("admin")
    created = httpx.post(f"{base}/api/v1/devices", json={"identifier": BED}, headers=admin)
    assert created.status_code == 201
    screen = f"{live_server.ws_url}/ws/sites/{clinic.site_id}"
    with connect(screen, additional_headers=clinic.auth("nurse")) as ws:
        snapshot = json.loads(ws.recv(timeout=5))
        assert snapshot["type"] == "snapshot"
        chair_1 = snapshot["chairs"][0]["chair_id"]
        bound = httpx.put(
            f"{base}/api/v1/devices/{BED}/binding", json={"chair_id": chair_1}, headers=admin
        )
        assert bound.status_code == 200, bound.text
        kinds: list[str] = []
        while "snapshot" not in kinds:
            message = json.loads(ws.recv(timeout=5))
            kinds.append(message["type"])
        assert "resync" in kinds
        assert BED in message["chairs"][0]["devices"]
