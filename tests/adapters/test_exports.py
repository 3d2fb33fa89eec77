"""Session exports, parsed back to check them: HL7 v2 by Vigil's reader, FHIR by fhir.resources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from app.adapters.hl7_messages import decode, map_vitals, parse_message
from tests.conftest import Clinic

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
T = TypeVar("T")


def some(value: T | None) -> T:
    """A FHIR element that must be there (fhir.resources types every element optional)."""
    assert value is not None
    return value


@pytest.fixture
def client(app: FastAPI, clinic: Clinic) -> Iterator[TestClient]:
    """Signed in as the clinician, whom exports need."""
    with TestClient(app, headers=clinic.auth("clinician")) as test_client:
        yield test_client


def obs(vital: str, value: float, unit: str, at_s: int, **extra: Any) -> dict[str, Any]:
    moment = (T0 + timedelta(seconds=at_s)).isoformat()
    return {"vital": vital, "value": value, "unit": unit, "device_time": moment, **extra}


@pytest.fixture
def session_id(client: TestClient, clinic: Clinic) -> int:
    """Chair 1's open session, with HR, SpO2 (flagged), a cuff reading in kPa, and PR."""
    response = client.post(
        "/api/v1/observations",
        json={
            "device_id": clinic.device(1),
            "observations": [
                obs("hr", 72, "/min", 0),
                obs("spo2", 97, "%", 0, quality=["artifact"]),
                obs("nibp_sys", 16, "kPa", 30),
                obs("nibp_dia", 80, "mm[Hg]", 30),
                obs("nibp_mean", 93, "mm[Hg]", 30),
                obs("pr", 70, "/min", 60),
            ],
        },
        headers=clinic.device_auth,
    )
    assert response.status_code == 201, response.text
    session: int = response.json()["session_id"]
    return session


EXPECTED = {
    ("hr", 0): 72,
    ("spo2", 0): 97,
    ("nibp_sys", 30): pytest.approx(16 * 7.50062),
    ("nibp_dia", 30): 80,
    ("nibp_mean", 30): 93,
    ("pr", 60): 70,
}


def test_hl7_export_parses_back_to_the_session(
    client: TestClient, clinic: Clinic, session_id: int
) -> None:
    response = client.get(f"/api/v1/sessions/{session_id}/export/hl7v2")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("x-application/hl7-v2+er7")
    message = parse_message(decode(response.content)[0], UTC)
    assert (message.header.message_code, message.header.trigger) == ("ORU", "R01")
    mapped = map_vitals(message, datetime.now(UTC))
    assert mapped.notes == []
    got = {
        (m.vital.value, int((m.device_time - T0).total_seconds())): m.value for m in mapped.values
    }
    assert got == EXPECTED
    assert {o.equipment for o in message.observations} == {(clinic.device(1),)}
    assert {o.coding_system for o in message.observations} == {"MDC"}
    assert "NTE|1||quality: artifact" in response.text


def test_fhir_export_is_a_valid_bundle_of_vital_signs(
    client: TestClient, clinic: Clinic, session_id: int
) -> None:
    response = client.get(f"/api/v1/sessions/{session_id}/export/fhir")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    bundle = Bundle.model_validate(json.loads(response.content))
    assert bundle.type == "collection"
    resources = [some(entry.resource) for entry in bundle.entry or []]
    urls = {entry.fullUrl for entry in bundle.entry or []}
    observations = [r for r in resources if isinstance(r, Observation)]
    assert [r.get_resource_type() for r in resources[:2]] == ["Patient", "Device"]

    by_code: dict[str, Observation] = {}
    for observation in observations:
        assert observation.status == "final"
        assert some(some(observation.category)[0].coding)[0].code == "vital-signs"
        assert some(observation.subject).reference in urls
        assert some(observation.device).reference in urls
        assert observation.code.coding is not None
        by_code[some(observation.code.coding[0].code)] = observation
    # HR, SpO2, the BP panel (sys + dia), MAP, PR: five Observations (HR and PR share 8867-4).
    assert len(observations) == 5
    assert sorted(by_code) == ["2708-6", "8478-0", "85354-9", "8867-4"]

    spo2 = by_code["2708-6"]
    assert spo2.valueQuantity is not None
    assert (float(some(spo2.valueQuantity.value)), spo2.valueQuantity.code) == (97, "%")
    assert spo2.valueQuantity.system == "http://unitsofmeasure.org"
    assert {c.code for c in spo2.code.coding or []} >= {"2708-6", "59408-5", "150456"}
    assert spo2.note is not None
    assert spo2.note[0].text == "quality: artifact"
    assert spo2.effectiveDateTime == T0

    panel = by_code["85354-9"]
    components = {
        some(some(c.code.coding)[0].code): some(c.valueQuantity) for c in panel.component or []
    }
    assert float(some(components["8480-6"].value)) == pytest.approx(16 * 7.50062)
    assert components["8462-4"].code == "mm[Hg]"
    assert panel.effectiveDateTime == T0 + timedelta(seconds=30)
    assert "http://hl7.org/fhir/StructureDefinition/bp" in (some(panel.meta).profile or [])

    rates = [o for o in observations if o.code.coding and o.code.coding[0].code == "8867-4"]
    assert sorted(float(some(some(o.valueQuantity).value)) for o in rates) == [70, 72]


def test_exports_need_a_clinician(client: TestClient, clinic: Clinic, session_id: int) -> None:
    for kind in ("csv", "hl7v2", "fhir"):
        url = f"/api/v1/sessions/{session_id}/export/{kind}"
        nurse = client.get(url, headers=clinic.auth("nurse"))
        assert (nurse.status_code, nurse.json()["code"]) == (403, "forbidden"), kind
        assert client.get(url, headers={"Authorization": ""}).status_code == 401, kind
        assert client.get(url, headers=clinic.device_auth).status_code == 401, kind
        assert client.get(url, headers=clinic.auth("admin")).status_code == 200, kind


def test_an_unknown_session_is_404(client: TestClient) -> None:
    for kind in ("hl7v2", "fhir"):
        response = client.get(f"/api/v1/sessions/999999/export/{kind}")
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
