"""Sessions move through their phases by recorded events, and every screen follows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from tests.conftest import Clinic, LiveServer


@pytest.fixture
def client(app: FastAPI, clinic: Clinic) -> Iterator[TestClient]:
    """A client signed in as the clinic's nurse."""
    with TestClient(app, headers=clinic.auth("nurse")) as test_client:
        yield test_client


def chair_session(client: TestClient, clinic: Clinic, position: int) -> dict[str, Any]:
    chair: dict[str, Any] = client.get(f"/api/v1/sites/{clinic.site_id}").json()["chairs"][
        position - 1
    ]
    return chair


def event(client: TestClient, session_id: int, kind: str, **extra: Any) -> Any:
    return client.post(
        f"/api/v1/sessions/{session_id}/events",
        json={"kind": kind, **extra},
    )


def test_a_session_runs_from_check_in_to_discharge(client: TestClient, clinic: Clinic) -> None:
    chair = chair_session(client, clinic, 1)
    old = chair["session"]["id"]
    assert event(client, old, "discharge").status_code == 201
    assert chair_session(client, clinic, 1)["session"] is None

    started = client.post(
        f"/api/v1/chairs/{chair['id']}/sessions",
        json={
            "patient": {"pseudonym": "P-100", "initials": "Q.R.", "weight_kg": 70},
        },
    )
    assert started.status_code == 201, started.text
    session = started.json()
    assert session["phase"] == "checked_in"
    assert [e["kind"] for e in session["events"]] == ["check_in"]

    steps = [
        ("baseline_start", "baseline"),
        ("infusion_start", "infusion"),
        ("rate_change", "infusion"),
        ("infusion_stop", "recovery"),
        ("note", "recovery"),
        ("discharge", "discharged"),
    ]
    for kind, phase in steps:
        extra = {"value": 0.75, "unit": "mg/kg/h"} if kind == "rate_change" else {}
        response = event(client, session["id"], kind, **extra)
        assert response.status_code == 201, response.text
        assert response.json()["phase"] == phase
    final = client.get(f"/api/v1/sessions/{session['id']}").json()
    assert final["ended_at"] is not None
    assert final["events"][3] == {**final["events"][3], "kind": "rate_change", "value": 0.75}
    assert all(e["recorded_by"] == "nurse" for e in final["events"])


def test_events_that_do_not_fit_the_phase_are_409(client: TestClient, clinic: Clinic) -> None:
    chair = chair_session(client, clinic, 2)  # the demo's chair 2 is in infusion
    session_id = chair["session"]["id"]
    refused = event(client, session_id, "baseline_start")
    assert refused.status_code == 409
    assert "only possible from checked_in" in refused.json()["detail"]
    occupied = client.post(
        f"/api/v1/chairs/{chair['id']}/sessions",
        json={"patient": {"pseudonym": "P-2", "initials": "X.Y."}},
    )
    assert occupied.status_code == 409
    assert str(session_id) in occupied.json()["detail"]
    assert event(client, session_id, "discharge").status_code == 201
    assert event(client, session_id, "note", note="late").status_code == 409
    assert event(client, 9999, "note").status_code == 404
    assert (
        client.post(
            "/api/v1/chairs/9999/sessions",
            json={"patient": {"pseudonym": "P-3", "initials": "Z."}},
        ).status_code
        == 404
    )
    assert event(client, session_id, "dance").status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_screen_sees_the_new_phase(live_server: LiveServer, clinic: Clinic) -> None:
    import httpx

    with connect(
        f"{live_server.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
    ) as ws:
        snapshot = json.loads(ws.recv(timeout=5))
        chair = snapshot["chairs"][0]
        assert chair["session"]["phase"] == "baseline"
        response = httpx.post(
            f"{live_server.http_url}/api/v1/sessions/{chair['session']['session_id']}/events",
            json={"kind": "infusion_start"},
            headers=clinic.auth(),
        )
        assert response.status_code == 201
        kinds = []
        while True:
            message = json.loads(ws.recv(timeout=5))
            kinds.append(message["type"])
            if message["type"] == "snapshot":
                break
        assert "resync" in kinds
        updated = message["chairs"][0]["session"]
        assert updated["phase"] == "infusion"
        assert updated["infusion_started_at"] is not None
