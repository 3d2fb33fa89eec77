"""Structured logs, as `vigil serve` writes them: one JSON event per line, each with its
request id (and device id where known), none with health data or patient identifiers."""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import UTC, datetime

import httpx
import pytest
from websockets.sync.client import connect

from app.observability.logs import JsonLineFormatter, TextFormatter, logging_config
from tests.conftest import PASSWORD, Clinic, free_port
from tests.test_cli import VIGIL, env_with, wait_healthy

# Values no request id, timestamp or path could contain by chance.
POSTED_VALUES = (71.37, 96.41, 133.29)
PSEUDONYM = "PX-ZEBRA-7Q4"
INITIALS = "Q.X."


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_logs_json_lines_with_request_ids_and_no_health_data(clinic: Clinic) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [VIGIL, "serve", "--port", str(port), "--no-upgrade", "--access-log"],
        # DEBUG: the most a troubleshooting IT person would switch on must be clean too.
        env=env_with(VIGIL_DATABASE_URL=clinic.url, VIGIL_LOG_LEVEL="DEBUG"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port, process)
        answered_ids = drive_a_clinic_day(base, clinic)
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)

    assert stdout == "", "logs go to standard error only"
    events = [json.loads(line) for line in stderr.splitlines()]  # each line is one JSON event
    assert events, "the server logged nothing"
    assert all({"time", "level", "logger", "message"} <= event.keys() for event in events)

    access = [event for event in events if event["logger"] == "vigil.access"]
    assert {event["request_id"] for event in access} >= set(answered_ids)
    assert "from-the-proxy-42" in answered_ids, "a caller's sane X-Request-ID is kept"
    ingest = [event for event in access if event["path"] == "/api/v1/observations"]
    assert {event["device_id"] for event in ingest} == {clinic.device(1)}
    assert {event["status"] for event in ingest} == {201, 422}

    # Every event written while a request was handled says which request.
    in_requests = [e for e in events if e["logger"] in {"vigil.access", "app.auth.audit"}]
    assert any(e["logger"] == "app.auth.audit" for e in in_requests), "sign-ins are logged"
    assert all(e.get("request_id") for e in in_requests)

    for value in POSTED_VALUES:
        assert str(value) not in stderr
    assert PSEUDONYM not in stderr
    assert INITIALS not in stderr
    assert PASSWORD not in stderr
    assert "vgu_" not in stderr, "no bearer token either"
    assert "vgd_" not in stderr


def drive_a_clinic_day(base: str, clinic: Clinic) -> list[str]:
    """Sign in (browser and API), check a patient in, post vitals (good and refused), watch
    the site live; return the request ids the server answered with."""
    answered: list[str] = []

    def keep(response: httpx.Response) -> httpx.Response:
        answered.append(response.headers["x-request-id"])
        return response

    with httpx.Client(base_url=base) as browser:
        form = {"username": "nurse", "password": PASSWORD, "next": "/"}
        assert keep(browser.post("/login", data=form)).status_code == 303
    token = keep(
        httpx.post(f"{base}/api/v1/auth/token", json={"username": "nurse", "password": PASSWORD})
    ).json()["access_token"]
    nurse = {"Authorization": f"Bearer {token}", "X-Request-ID": "from-the-proxy-42"}
    with httpx.Client(base_url=base, headers=nurse) as api:
        chair = keep(api.get(f"/api/v1/sites/{clinic.site_id}")).json()["chairs"][0]
        discharged = api.post(
            f"/api/v1/sessions/{chair['session']['id']}/events", json={"kind": "discharge"}
        )
        assert keep(discharged).status_code == 201, discharged.text
        checked_in = api.post(
            f"/api/v1/chairs/{chair['id']}/sessions",
            json={"patient": {"pseudonym": PSEUDONYM, "initials": INITIALS, "weight_kg": 70}},
        )
        assert keep(checked_in).status_code == 201, checked_in.text
        session_id = checked_in.json()["id"]
        note = {"kind": "note", "note": f"{INITIALS} comfortable"}
        assert keep(api.post(f"/api/v1/sessions/{session_id}/events", json=note)).is_success

        with connect(
            f"{base.replace('http', 'ws')}/ws/sites/{clinic.site_id}",
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as live:
            assert json.loads(live.recv(timeout=5))["type"] == "snapshot"
            now = datetime.now(UTC)
            batch = {
                "device_id": clinic.device(1),
                "observations": [
                    {"vital": vital, "value": value, "unit": unit, "device_time": stamp(now)}
                    for vital, value, unit in zip(
                        ("hr", "spo2", "nibp_sys"),
                        POSTED_VALUES,
                        ("/min", "%", "mm[Hg]"),
                        strict=True,
                    )
                ],
            }
            posted = httpx.post(
                f"{base}/api/v1/observations", json=batch, headers=clinic.device_auth
            )
            assert keep(posted).status_code == 201, posted.text
            live_values = {json.loads(live.recv(timeout=5))["type"] for _ in range(2)}
            assert "samples" in live_values
        implausible = {
            "device_id": clinic.device(1),
            "observations": [
                {"vital": "hr", "value": 1713.37, "unit": "/min", "device_time": stamp(now)}
            ],
        }
        refused = httpx.post(
            f"{base}/api/v1/observations", json=implausible, headers=clinic.device_auth
        )
        assert keep(refused).status_code == 422
    clinician = {"Authorization": f"Bearer {clinic.tokens['clinician']}"}
    # The review's search takes a pseudonym in the query string, which no log line may copy.
    review = httpx.get(
        f"{base}/api/v1/review/sessions", params={"patient": PSEUDONYM}, headers=clinician
    )
    assert keep(review).status_code == 200, review.text
    assert [row["patient_initials"] for row in review.json()["items"]] == [INITIALS]
    trend = httpx.get(f"{base}/api/v1/sessions/{session_id}/trend", headers=clinician)
    assert keep(trend).status_code == 200
    return answered


def record(message: str, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("vigil.test", logging.INFO, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


def test_json_lines_carry_extra_fields_and_text_lines_the_ids() -> None:
    line = JsonLineFormatter().format(record("stored", request_id="r1", rows=3))
    event = json.loads(line)
    assert (event["message"], event["request_id"], event["rows"]) == ("stored", "r1", 3)
    assert "device_id" not in event, "an id that is not known is left out"
    text = TextFormatter().format(record("stored", request_id="r1", device_id="mon-7"))
    assert text.endswith("vigil.test: stored [request_id=r1 device_id=mon-7]")


def test_the_level_and_format_settings_shape_the_configuration() -> None:
    config = logging_config("debug", "text")
    assert config["root"]["level"] == "DEBUG"
    assert config["handlers"]["stderr"]["formatter"] == "text"
    assert config["loggers"]["uvicorn.asgi"] == {
        "level": "DEBUG",
        "handlers": [],
        "propagate": True,
    }
    # Libraries that log each outgoing request stay quiet below WARNING, and those that
    # copy the wire (websocket frames, headers, form fields) never log below INFO.
    assert config["loggers"]["httpx"]["level"] == "WARNING"
    assert config["loggers"]["uvicorn.error"]["level"] == "INFO"
    assert config["loggers"]["websockets"]["level"] == "INFO"
    assert logging_config("ERROR", "json")["loggers"]["httpx"]["level"] == "ERROR"
