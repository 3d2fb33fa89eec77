"""HTTP ingest: validated, normalised, whole-or-nothing, committed before the 2xx."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from app.storage.models import Sample
from monitor.vitals import MMHG_PER_KPA, SampleQuality
from tests.conftest import Clinic, add_device_credential

URL = "/api/v1/observations"


@pytest.fixture
def client(app: FastAPI, clinic: Clinic) -> Iterator[TestClient]:
    """A client sending as the clinic's devices (the site's gateway credential)."""
    with TestClient(app, headers=clinic.device_auth) as test_client:
        yield test_client


def now_iso(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat()


def obs(vital: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {"vital": vital, "value": value, "unit": unit, "device_time": now_iso(), **extra}


def stored_samples(clinic: Clinic) -> list[Sample]:
    """Read through a separate engine: only committed rows are visible."""
    engine = create_engine(clinic.url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(Sample).order_by(Sample.id)))
    finally:
        engine.dispose()


def sample_count(clinic: Clinic) -> int:
    engine = create_engine(clinic.url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(Sample)) or 0)
    finally:
        engine.dispose()


def test_batch_is_committed_before_the_answer(client: TestClient, clinic: Clinic) -> None:
    stamp = now_iso()
    # The same instant as a clock two hours east of UTC would give it: stored as UTC.
    east = datetime.fromisoformat(stamp).astimezone(timezone(timedelta(hours=2))).isoformat()
    response = client.post(
        URL,
        json={
            "device_id": clinic.device(1),
            "observations": [
                {"vital": "hr", "value": 72, "unit": "/min", "device_time": east},
                {
                    "vital": "spo2",
                    "value": 97,
                    "unit": "%",
                    "device_time": stamp,
                    "quality": ["artifact"],
                },
            ],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["chair_id"] is not None
    assert body["session_id"] is not None
    rows = stored_samples(clinic)
    assert [(r.vital, r.value, r.unit) for r in rows] == [("hr", 72, "/min"), ("spo2", 97, "%")]
    assert rows[1].quality == SampleQuality.ARTIFACT
    assert rows[0].session_id == body["session_id"]
    assert rows[0].device_time.tzinfo is not None
    assert rows[0].device_time == rows[1].device_time == datetime.fromisoformat(stamp)
    assert rows[0].device_time.utcoffset() == timedelta(0)
    assert rows[0].received_time == datetime.fromisoformat(body["received_time"])


def test_kpa_is_stored_as_mmhg_and_codes_as_canonical(client: TestClient, clinic: Clinic) -> None:
    stamp = now_iso()
    response = client.post(
        URL,
        json={
            "device_id": clinic.device(2),
            "observations": [
                {"vital": "150021", "value": 16, "unit": "kPa", "device_time": stamp},
                {"vital": "8462-4", "value": 10.5, "unit": "kPa", "device_time": stamp},
            ],
        },
    )
    assert response.status_code == 201, response.text
    rows = stored_samples(clinic)
    assert [r.vital for r in rows] == ["nibp_sys", "nibp_dia"]
    assert rows[0].value == pytest.approx(16 * MMHG_PER_KPA)
    assert rows[0].unit == "mm[Hg]"


def test_unknown_device_is_404_naming_it(client: TestClient, clinic: Clinic) -> None:
    response = client.post(
        URL, json={"device_id": "monitor-x9", "observations": [obs("hr", 70, "/min")]}
    )
    assert response.status_code == 404
    assert "monitor-x9" in response.json()["detail"]
    assert sample_count(clinic) == 0


def locs(response: Any) -> list[list[Any]]:
    return [problem["loc"] for problem in response.json()["detail"]]


@pytest.mark.parametrize(
    ("observation", "field", "message"),
    [
        (obs("spo2", 101, "%"), "value", "SpO2 101"),
        (obs("hr", 70, "kPa"), "unit", "does not fit hr"),
        (obs("temp", 37, "Cel"), "vital", "unknown vital code 'temp'"),
        ({**obs("hr", 70, "/min"), "device_time": now_iso(3600)}, "device_time", "ahead"),
        (
            {**obs("hr", 70, "/min"), "device_time": "2026-11-25T10:00:00"},
            "device_time",
            "timezone",
        ),
        ({**obs("hr", 70, "/min"), "quality": ["sparkly"]}, "quality", ""),
        ({**obs("hr", 70, "/min"), "colour": "red"}, "colour", "Extra"),
    ],
)
def test_bad_observation_is_422_naming_the_field(
    client: TestClient, clinic: Clinic, observation: dict[str, Any], field: str, message: str
) -> None:
    response = client.post(
        URL,
        json={"device_id": clinic.device(1), "observations": [obs("hr", 70, "/min"), observation]},
    )
    assert response.status_code == 422, response.text
    problem_locs = locs(response)
    assert any(loc[:3] == ["body", "observations", 1] and field in loc for loc in problem_locs), (
        problem_locs
    )
    assert message in response.text
    assert sample_count(clinic) == 0, "a batch is accepted whole or rejected whole"


def test_systolic_below_diastolic_is_refused(client: TestClient, clinic: Clinic) -> None:
    stamp = now_iso()
    response = client.post(
        URL,
        json={
            "device_id": clinic.device(1),
            "observations": [
                {"vital": "nibp_sys", "value": 80, "unit": "mm[Hg]", "device_time": stamp},
                {"vital": "nibp_dia", "value": 95, "unit": "mm[Hg]", "device_time": stamp},
            ],
        },
    )
    assert response.status_code == 422
    assert locs(response) == [["body", "observations", 0, "value"]]
    assert "below the diastolic 95" in response.text
    assert sample_count(clinic) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"device_id": "demo-monitor-01", "observations": []},
        {"observations": [obs("hr", 70, "/min")]},
        {"device_id": "demo-monitor-01", "observations": [obs("hr", 70, "/min")] * 1001},
    ],
)
def test_malformed_batches_are_422(
    client: TestClient, clinic: Clinic, body: dict[str, Any]
) -> None:
    assert client.post(URL, json=body).status_code == 422
    assert sample_count(clinic) == 0


def test_non_finite_json_number_is_refused(client: TestClient, clinic: Clinic) -> None:
    raw = (
        '{"device_id":"demo-monitor-01","observations":[{"vital":"hr","value":NaN,'
        f'"unit":"/min","device_time":"{now_iso()}"}}]}}'
    )
    response = client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert sample_count(clinic) == 0


def test_unbound_device_is_kept_and_flagged(
    client: TestClient, clinic: Clinic, app: FastAPI
) -> None:
    from app.storage.models import Device

    with app.state.db.session() as session:
        spare = Device(identifier="spare-oximeter", chair_id=None, created_at=datetime.now(UTC))
        session.add(spare)
        session.commit()
        # A device at no chair belongs to no site's gateway: it sends with its own credential.
        token = add_device_credential(session, spare.id)
    response = client.post(
        URL,
        json={"device_id": "spare-oximeter", "observations": [obs("spo2", 95, "%")]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201
    assert response.json()["chair_id"] is None
    (row,) = stored_samples(clinic)
    assert row.chair_id is None
    assert row.quality & SampleQuality.UNBOUND


def test_healthz_reports_the_database(client: TestClient, clinic: Clinic) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] in {"sqlite", "postgresql"}


def test_sites_api_lists_chairs_devices_and_sessions(client: TestClient, clinic: Clinic) -> None:
    nurse = clinic.auth("nurse")
    sites = client.get("/api/v1/sites", headers=nurse).json()
    assert [(s["id"], s["chair_count"]) for s in sites] == [(clinic.site_id, 3)]
    detail = client.get(f"/api/v1/sites/{clinic.site_id}", headers=nurse).json()
    assert [c["devices"] for c in detail["chairs"]] == [[clinic.device(i)] for i in (1, 2, 3)]
    assert all(c["session"]["patient_initials"] for c in detail["chairs"])
    assert client.get("/api/v1/sites/999", headers=nurse).status_code == 403
    missing = client.get("/api/v1/sites/999", headers=clinic.auth("admin"))
    assert missing.status_code == 404
    assert "999" in missing.json()["detail"]


def test_a_batch_without_a_valid_credential_is_refused_and_not_kept(
    client: TestClient, clinic: Clinic
) -> None:
    body = {"device_id": clinic.device(1), "observations": [obs("hr", 70, "/min")]}
    anonymous = client.post(URL, json=body, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert "credential" in anonymous.json()["detail"]
    forged = client.post(URL, json=body, headers={"Authorization": "Bearer vgd_made-up"})
    assert forged.status_code == 401
    as_a_person = client.post(URL, json=body, headers=clinic.auth("admin"))
    assert as_a_person.status_code == 401, "people do not send vitals"
    assert sample_count(clinic) == 0


@pytest.mark.parametrize(
    "authorization",
    ["", "Basic dXNlcjpwYXNz", "Bearer vgd_forged-but-well-formed", "Bearer vgu_a-person"],
)
def test_an_invalid_batch_without_a_valid_credential_is_401_and_says_nothing_of_it(
    client: TestClient, clinic: Clinic, authorization: str
) -> None:
    """Who is not a device learns nothing of what a device sends: the credential is
    refused before the body's problems are told, whatever is wrong with the body."""
    implausible = {"device_id": clinic.device(1), "observations": [obs("spo2", 987.65, "%")]}
    malformed = {"device_id": clinic.device(1), "observations": [obs("hr", 987.65, "/min", x=1)]}
    headers = {"Authorization": authorization}
    for bad, field in ((implausible, "value"), (malformed, "x")):
        refused = client.post(URL, json=bad, headers=headers)
        assert refused.status_code == 401, refused.text
        assert "987.65" not in refused.text
        assert "observations" not in refused.text
        # With the site's credential, the same batch gets the 422 that names the field.
        told = client.post(URL, json=bad, headers=clinic.device_auth)
        assert told.status_code == 422
        assert told.json()["detail"][0]["loc"] == ["body", "observations", 0, field]
    not_json = client.post(URL, content=b"{not json", headers=headers)
    assert not_json.status_code == 401, not_json.text
    assert sample_count(clinic) == 0


def test_an_invalid_batch_with_a_revoked_credential_is_401(
    client: TestClient, clinic: Clinic
) -> None:
    admin = clinic.auth("admin")
    credentials = client.get("/api/v1/device-credentials", headers=admin).json()
    (gateway,) = [c for c in credentials if c["site_id"] == clinic.site_id]
    assert client.delete(f"/api/v1/device-credentials/{gateway['id']}", headers=admin).is_success
    implausible = {"device_id": clinic.device(1), "observations": [obs("hr", 999, "/min")]}
    assert client.post(URL, json=implausible).status_code == 401
    malformed = {"device_id": clinic.device(1), "observations": []}
    assert client.post(URL, json=malformed).status_code == 401


def test_a_device_credential_sends_for_its_own_device_only_until_revoked(
    client: TestClient, clinic: Clinic, app: FastAPI
) -> None:
    from app.storage.models import Device

    with app.state.db.session() as session:
        device_1 = session.scalars(
            select(Device).where(Device.identifier == clinic.device(1))
        ).one()
        token = add_device_credential(session, device_1.id)
    own = {"Authorization": f"Bearer {token}"}
    mine = client.post(
        URL,
        json={"device_id": clinic.device(1), "observations": [obs("hr", 70, "/min")]},
        headers=own,
    )
    assert mine.status_code == 201
    other = client.post(
        URL,
        json={"device_id": clinic.device(2), "observations": [obs("hr", 71, "/min")]},
        headers=own,
    )
    assert other.status_code == 403
    assert clinic.device(2) in other.json()["detail"]
    credentials = client.get("/api/v1/device-credentials", headers=clinic.auth("admin")).json()
    (bound,) = [c for c in credentials if c["device_id"] == clinic.device(1)]
    revoked = client.delete(
        f"/api/v1/device-credentials/{bound['id']}", headers=clinic.auth("admin")
    )
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    after = client.post(
        URL,
        json={"device_id": clinic.device(1), "observations": [obs("hr", 72, "/min")]},
        headers=own,
    )
    assert after.status_code == 401
    assert sample_count(clinic) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_writer_reconnects_when_the_database_dropped_its_connection(
    client: TestClient, clinic: Clinic
) -> None:
    """The writer keeps its connection open between posts; when the server ends it (a
    restart, an administrator), the next post opens another instead of failing."""
    assert (
        client.post(
            URL, json={"device_id": clinic.device(1), "observations": [obs("hr", 70, "/min")]}
        ).status_code
        == 201
    )
    admin = create_engine(clinic.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        admin.dispose()
    assert (ended or 0) >= 1, "the writer's connection was open"
    response = client.post(
        URL, json={"device_id": clinic.device(1), "observations": [obs("hr", 71, "/min")]}
    )
    assert response.status_code == 201, response.text
    assert [s.value for s in stored_samples(clinic)] == [70, 71]
