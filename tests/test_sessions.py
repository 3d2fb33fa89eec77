"""Sessions move through their phases by recorded events, and every screen follows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from websockets.sync.client import ClientConnection, connect

from app.live.repository import load_site_view
from app.live.views import SessionView
from app.storage.db import Database
from app.storage.models import AuditEvent, Chair, InfusionSession, Patient, SessionPhase, Site
from app.timeutil import iso, utcnow
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


# --- patients: scoped to the caller's sites, changed only on purpose -------------------------


def other_site_with_patient(clinic: Clinic) -> tuple[int, int]:
    """Site B with a chair and an open session of patient P-B: (site id, patient id)."""
    now = utcnow()
    with Session(create_engine(clinic.url)) as session:
        site = Site(name="Site B", created_at=now)
        session.add(site)
        session.flush()
        chair = Chair(site_id=site.id, name="B1", position=1)
        patient = Patient(pseudonym="P-B", initials="B.B.", weight_kg=55.0, birth_year=1970)
        session.add_all([chair, patient])
        session.flush()
        session.add(
            InfusionSession(
                chair_id=chair.id,
                patient_id=patient.id,
                phase=SessionPhase.INFUSION,
                started_at=now,
            )
        )
        session.commit()
        return site.id, patient.id


def patient_details(clinic: Clinic, patient_id: int) -> tuple[str, float | None, int | None]:
    with Session(create_engine(clinic.url)) as session:
        patient = session.get_one(Patient, patient_id)
        return patient.initials, patient.weight_kg, patient.birth_year


def audit_actions(clinic: Clinic) -> list[tuple[str, str, str]]:
    with Session(create_engine(clinic.url)) as session:
        return [
            (event.action, event.outcome, event.detail or "")
            for event in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]


def free_chair(client: TestClient, clinic: Clinic, position: int) -> int:
    chair = chair_session(client, clinic, position)
    assert event(client, chair["session"]["id"], "discharge").status_code == 201
    return int(chair["id"])


def test_a_nurse_cannot_check_in_another_sites_patient_nor_change_it(
    client: TestClient, clinic: Clinic
) -> None:
    """The cross-site overwrite: a nurse of site A, a chair of site A, the pseudonym of a
    patient of site B. Refused, and site B's patient keeps its details."""
    _, patient_id = other_site_with_patient(clinic)
    chair_id = free_chair(client, clinic, 1)
    overwrite = {"pseudonym": "P-B", "initials": "X.X.", "weight_kg": 99, "birth_year": 2000}
    refused = client.post(f"/api/v1/chairs/{chair_id}/sessions", json={"patient": overwrite})
    assert refused.status_code == 403, refused.text
    assert "B.B." not in refused.text
    assert patient_details(clinic, patient_id) == ("B.B.", 55.0, 1970)
    assert chair_session(client, clinic, 1)["session"] is None
    denied = [a for a in audit_actions(clinic) if a[0] == "access_denied"]
    assert denied
    assert "may not see" in denied[-1][2]


def test_an_existing_patient_is_referenced_and_never_changed_by_a_check_in(
    client: TestClient, clinic: Clinic
) -> None:
    chair_id = free_chair(client, clinic, 1)
    url = f"/api/v1/chairs/{chair_id}/sessions"
    patient = {"pseudonym": "P-200", "initials": "Q.R.", "weight_kg": 70, "birth_year": 1980}
    first = client.post(url, json={"patient": patient})
    assert first.status_code == 201, first.text
    patient_id = first.json()["patient_id"]
    assert event(client, first.json()["id"], "discharge").status_code == 201
    # The next visit names the patient by pseudonym alone, or with the same details.
    again = client.post(url, json={"patient": {"pseudonym": "P-200", "initials": "Q.R."}})
    assert again.status_code == 201, again.text
    assert again.json()["patient_id"] == patient_id
    assert event(client, again.json()["id"], "discharge").status_code == 201
    for other in ({"initials": "Z.Z."}, {"weight_kg": 90}, {"birth_year": 1999}):
        changed = client.post(url, json={"patient": {**patient, **other}})
        assert changed.status_code == 409, changed.text
        assert f"/api/v1/patients/{patient_id}" in changed.json()["detail"]
    assert patient_details(clinic, patient_id) == ("Q.R.", 70.0, 1980)


def test_a_clinician_corrects_a_patients_details_as_an_audited_act(
    client: TestClient, clinic: Clinic
) -> None:
    chair = chair_session(client, clinic, 1)
    patient_id = client.get(f"/api/v1/sessions/{chair['session']['id']}").json()["patient_id"]
    url = f"/api/v1/patients/{patient_id}"
    correction = {"initials": "C.D.", "weight_kg": 81.5}
    assert client.patch(url, json=correction).status_code == 403, "nurses check in; no more"
    corrected = client.patch(url, json=correction, headers=clinic.auth("clinician"))
    assert corrected.status_code == 200, corrected.text
    assert corrected.json() == {**corrected.json(), "initials": "C.D.", "weight_kg": 81.5}
    assert patient_details(clinic, patient_id)[:2] == ("C.D.", 81.5)
    # The screens of the site show the corrected initials on the open session.
    assert chair_session(client, clinic, 1)["session"]["patient_initials"] == "C.D."
    action, outcome, detail = audit_actions(clinic)[-1]
    assert (action, outcome) == ("patient_changed", "ok")
    assert json.loads(detail) == {"fields": ["initials", "weight_kg"]}
    assert "C.D." not in detail
    nothing = client.patch(url, json={}, headers=clinic.auth("clinician"))
    assert nothing.status_code == 422
    # Another site's patient is not the clinician's to change, and stays as it was.
    _, other_patient = other_site_with_patient(clinic)
    other = client.patch(
        f"/api/v1/patients/{other_patient}", json=correction, headers=clinic.auth("clinician")
    )
    assert other.status_code == 403
    assert patient_details(clinic, other_patient) == ("B.B.", 55.0, 1970)
    missing = client.patch("/api/v1/patients/999999", json=correction, headers=clinic.auth("admin"))
    assert missing.status_code == 404
