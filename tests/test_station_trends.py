"""The nurse station's read routes through the real server: trend window, sparklines, state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Clinic, LiveServer


def post_readings(
    server: LiveServer, clinic: Clinic, device: str, readings: list[dict[str, Any]]
) -> None:
    response = httpx.post(
        f"{server.http_url}/api/v1/observations",
        json={"device_id": device, "observations": readings},
        headers=clinic.device_auth,
    )
    assert response.status_code == 201, response.text


def reading(
    vital: str, value: float, unit: str, seconds_ago: float, **extra: Any
) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {"vital": vital, "value": value, "unit": unit, "device_time": at.isoformat(), **extra}


def session_of_chair(server: LiveServer, clinic: Clinic, position: int) -> int:
    site = httpx.get(
        f"{server.http_url}/api/v1/sites/{clinic.site_id}", headers=clinic.auth()
    ).json()
    session_id: int = site["chairs"][position - 1]["session"]["id"]
    return session_id


def test_the_trend_holds_samples_alarms_events_and_limits(
    live_server: LiveServer, clinic: Clinic
) -> None:
    session_id = session_of_chair(live_server, clinic, 2)
    post_readings(
        live_server,
        clinic,
        clinic.device(2),
        [
            reading("hr", 80, "/min", 3),
            reading("hr", 82, "/min", 2),
            reading("spo2", 84, "%", 1),  # the desat rule: an alarm at once
            reading("spo2", 70, "%", 0, quality=["artifact"]),  # flagged: not drawn
        ],
    )
    event = httpx.post(
        f"{live_server.http_url}/api/v1/sessions/{session_id}/events",
        json={"kind": "rate_change", "value": 0.75, "unit": "mg/kg/h"},
        headers=clinic.auth("nurse"),
    )
    assert event.status_code == 201, event.text
    override = httpx.post(
        f"{live_server.http_url}/api/v1/sessions/{session_id}/limits",
        json={"rule_id": "spo2_low_medium", "limit": 89, "reason": "COPD"},
        headers=clinic.auth("clinician"),
    )
    assert override.status_code == 201, override.text
    assert override.json()["by"] == "clinician"

    trend = httpx.get(
        f"{live_server.http_url}/api/v1/sessions/{session_id}/trend",
        params={"minutes": 60},
        headers=clinic.auth(),
    ).json()
    assert trend["chair_id"] == 2
    assert trend["phase"] == "infusion"
    assert trend["series"]["hr"]["v"] == [80, 82]
    assert trend["series"]["spo2"]["v"] == [84]
    assert [a["rule_id"] for a in trend["alarms"] if a["rule_id"] == "spo2_desat"] == ["spo2_desat"]
    assert [(e["kind"], e["recorded_by"]) for e in trend["events"]][-1] == ("rate_change", "nurse")
    limits = {limit["rule_id"]: limit for limit in trend["limits"]}
    assert limits["spo2_low_medium"]["limit"] == 89
    assert limits["spo2_low_medium"]["protocol_limit"] == 93
    assert limits["spo2_low_high"]["limit"] == limits["spo2_low_high"]["protocol_limit"] == 90
    assert "sbp_rise_medium" in limits  # an infusion-phase rule


def test_an_unknown_session_has_no_trend(live_server: LiveServer, clinic: Clinic) -> None:
    response = httpx.get(
        f"{live_server.http_url}/api/v1/sessions/9999/trend", headers=clinic.auth()
    )
    assert response.status_code == 404
    assert "9999" in response.json()["detail"]


def test_sparklines_are_bucket_means_of_open_sessions(
    live_server: LiveServer, clinic: Clinic
) -> None:
    post_readings(
        live_server,
        clinic,
        clinic.device(1),
        [reading("spo2", value, "%", 0) for value in (96, 98)] + [reading("pr", 70, "/min", 0)],
    )
    body = httpx.get(
        f"{live_server.http_url}/api/v1/sites/{clinic.site_id}/sparklines",
        params={"minutes": 15, "bucket_s": 60},
        headers=clinic.auth(),
    ).json()
    assert body["bucket_s"] == 60
    by_chair = {chair["chair_id"]: chair for chair in body["chairs"]}
    assert sorted(by_chair) == [1, 2, 3]
    assert by_chair[1]["series"]["spo2"]["v"] == [97]
    assert by_chair[1]["series"]["pr"]["v"] == [70]
    assert by_chair[2]["series"] == {}


def test_station_state_says_which_sessions_are_paused_and_until_when(
    live_server: LiveServer, clinic: Clinic
) -> None:
    session_id = session_of_chair(live_server, clinic, 3)
    url = f"{live_server.http_url}/api/v1/sites/{clinic.site_id}/station-state"
    before = httpx.get(url, headers=clinic.auth()).json()
    assert before["audio_paused_until"] == {}
    assert before["nibp_interval_s"]["infusion"] == 300
    assert before["nibp_interval_s"]["recovery"] == 900
    assert before["device_silent_s"] == 10
    post_readings(live_server, clinic, clinic.device(3), [reading("spo2", 84, "%", 0)])
    paused = httpx.post(
        f"{live_server.http_url}/api/v1/sessions/{session_id}/audio-pause",
        json={},
        headers=clinic.auth(),
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["alarms"]

    after = httpx.get(url, headers=clinic.auth()).json()
    until = datetime.fromisoformat(after["audio_paused_until"][str(session_id)])
    left = (until - datetime.fromisoformat(after["server_time"])).total_seconds()
    assert after["audio_pause_s"] - 5 < left <= after["audio_pause_s"]
