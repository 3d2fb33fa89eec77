"""Sessions move through their phases by recorded events, and every screen follows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.sync.client import ClientConnection, connect

from app.live.repository import load_site_view
from app.live.views import SessionView
from app.storage.db import Database
from app.timeutil import iso
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


def next_delta(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not a heartbeat or an alarm transition."""
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=5))
        if message["type"] not in {"heartbeat", "alarm"}:
            return message


def stored_session_view(clinic: Clinic, chair_id: int) -> SessionView | None:
    """The chair's session as a full load from the database sees it."""
    db = Database(clinic.url)
    try:
        with db.session() as session:
            site = load_site_view(session, clinic.site_id)
    finally:
        db.close()
    assert site is not None
    return site.chairs[chair_id].session


def test_session_events_reach_every_screen_as_deltas_without_a_resync(
    live_server: LiveServer, clinic: Clinic
) -> None:
    url = f"{live_server.ws_url}/ws/sites/{clinic.site_id}"
    api = httpx.Client(base_url=live_server.http_url, headers=clinic.auth(), timeout=10)
    with api, connect(url, additional_headers=clinic.auth()) as ws:
        snapshot = json.loads(ws.recv(timeout=5))
        chair = snapshot["chairs"][0]
        chair_id, old = chair["chair_id"], chair["session"]
        assert old["phase"] == "baseline"
        seq = snapshot["seq"]

        def expect_delta(event: str) -> dict[str, Any]:
            nonlocal seq
            delta = next_delta(ws)
            assert delta["type"] == "session", delta
            # A delta, numbered after the last one: never a resync and a fresh snapshot.
            assert (delta["type"], delta["event"], delta["chair_id"]) == (
                "session",
                event,
                chair_id,
            )
            assert delta["seq"] > seq
            seq = delta["seq"]
            view = stored_session_view(clinic, chair_id)
            # What the screens were told is what a full load from the database says.
            expected = (
                None
                if view is None
                else {
                    "session_id": view.session_id,
                    "phase": view.phase,
                    "patient_initials": view.patient_initials,
                    "started_at": iso(view.started_at),
                    "infusion_started_at": iso(view.infusion_started_at)
                    if view.infusion_started_at
                    else None,
                    "nibp_interval_s": view.nibp_interval_s,
                }
            )
            assert delta["session"] == expected
            return delta

        def record(session_id: int, kind: str, **extra: Any) -> None:
            response = api.post(
                f"/api/v1/sessions/{session_id}/events", json={"kind": kind, **extra}
            )
            assert response.status_code == 201, response.text

        record(old["session_id"], "infusion_start")
        started = expect_delta("infusion_start")["session"]
        assert started["phase"] == "infusion"
        assert started["infusion_started_at"] is not None
        record(old["session_id"], "rate_change", value=0.75, unit="mg/kg/h")
        assert expect_delta("rate_change")["session"] == started
        record(old["session_id"], "note", note="asks for a blanket")
        expect_delta("note")
        record(old["session_id"], "discharge")
        assert expect_delta("discharge")["session"] is None

        checked_in = api.post(
            f"/api/v1/chairs/{chair_id}/sessions",
            json={"patient": {"pseudonym": "P-200", "initials": "N.W."}},
        )
        assert checked_in.status_code == 201, checked_in.text
        new = expect_delta("check_in")["session"]
        assert (new["session_id"], new["phase"], new["patient_initials"]) == (
            checked_in.json()["id"],
            "checked_in",
            "N.W.",
        )

        # A screen that connects now starts from the same chair, kept in memory.
        with connect(url, additional_headers=clinic.auth()) as late:
            fresh = json.loads(late.recv(timeout=5))
        assert fresh["type"] == "snapshot"
        assert fresh["chairs"][0]["session"] == new
