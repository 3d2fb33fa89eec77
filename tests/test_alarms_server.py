"""Alarms through the real server: raised from ingested samples, stored before they are
broadcast, acknowledged from any screen, restored after a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from websockets.sync.client import ClientConnection, connect

from app.main import create_app
from app.settings import Settings
from app.storage.models import Alarm, AlarmTransitionRecord
from tests.conftest import Clinic, LiveServer


def spo2_trace(values: Sequence[float], end: datetime | None = None) -> list[dict[str, Any]]:
    """One SpO2 reading a second, the last one at `end` (now)."""
    end = end or datetime.now(UTC)
    start = end - timedelta(seconds=len(values) - 1)
    return [
        {
            "vital": "spo2",
            "value": value,
            "unit": "%",
            "device_time": (start + timedelta(seconds=i)).isoformat(),
        }
        for i, value in enumerate(values)
    ]


def post(
    server: LiveServer, clinic: Clinic, device: str, observations: list[dict[str, Any]]
) -> None:
    response = httpx.post(
        f"{server.http_url}/api/v1/observations",
        json={"device_id": device, "observations": observations},
        headers=clinic.device_auth,
    )
    assert response.status_code == 201, response.text


def alarm_message(
    ws: ClientConnection, rule_id: str, event: str, timeout: float = 5
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message: dict[str, Any] = json.loads(
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        )
        if (
            message["type"] == "alarm"
            and message["alarm"]["rule_id"] == rule_id
            and message["event"] == event
        ):
            return message


def snapshot(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=5))
    assert message["type"] == "snapshot"
    return message


def test_desaturation_raises_is_stored_then_acknowledged_everywhere(
    live_server: LiveServer, clinic: Clinic
) -> None:
    url = f"{live_server.ws_url}/ws/sites/{clinic.site_id}"
    with (
        connect(url, additional_headers=clinic.auth()) as nurse_a,
        connect(url, additional_headers=clinic.auth()) as nurse_b,
    ):
        chair_1 = snapshot(nurse_a)["chairs"][0]["chair_id"]
        snapshot(nurse_b)
        # 20 s of SpO2 at 88: past the 15 s delay of the 90 % high-priority rule.
        post(live_server, clinic, clinic.device(1), spo2_trace([97] * 5 + [88] * 20))
        raised = alarm_message(nurse_a, "spo2_low_high", "raised")
        assert raised["chair_id"] == chair_1
        alarm = raised["alarm"]
        assert alarm["priority"] == "high"
        assert alarm["kind"] == "physiological"
        assert alarm["state"] == "raised"
        assert "SpO2 88" in alarm["text"]
        assert "90" in alarm["text"]
        # Stored before it was broadcast.
        engine = create_engine(clinic.url)
        with engine.connect() as connection:
            stored = connection.execute(
                select(Alarm.state, Alarm.value).where(Alarm.id == alarm["alarm_id"])
            ).one()
        assert tuple(stored) == ("raised", 88)

        active = httpx.get(
            f"{live_server.http_url}/api/v1/sites/{clinic.site_id}/alarms",
            params={"active": True},
            headers=clinic.auth(),
        ).json()
        # One record: the API's stored alarm is, field for field, what the screens were sent.
        assert [a for a in active if a["alarm_id"] == alarm["alarm_id"]] == [alarm]
        assert alarm["protocol_version"]

        response = httpx.post(
            f"{live_server.http_url}/api/v1/alarms/{alarm['alarm_id']}/acknowledge",
            headers=clinic.auth("nurse"),
        )
        assert response.status_code == 200, response.text
        for screen in (nurse_a, nurse_b):
            acknowledged = alarm_message(screen, "spo2_low_high", "acknowledged")
            assert acknowledged["actor"] == "nurse"
            assert acknowledged["alarm"]["acknowledged_by"] == "nurse"
        with engine.connect() as connection:
            history = connection.execute(
                select(AlarmTransitionRecord.event, AlarmTransitionRecord.actor)
                .where(AlarmTransitionRecord.alarm_id == alarm["alarm_id"])
                .order_by(AlarmTransitionRecord.id)
            ).all()
        engine.dispose()
        assert [tuple(row) for row in history] == [("raised", None), ("acknowledged", "nurse")]


def test_unknown_alarm_and_bad_requests_are_named(live_server: LiveServer, clinic: Clinic) -> None:
    base = live_server.http_url
    nurse = clinic.auth("nurse")
    missing = httpx.post(f"{base}/api/v1/alarms/nope/acknowledge", headers=nurse)
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]
    session_id = session_of(live_server, clinic, 1)
    too_long = httpx.post(
        f"{base}/api/v1/sessions/{session_id}/audio-pause", json={"seconds": 3600}, headers=nurse
    )
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "seconds"]
    assert (
        httpx.post(f"{base}/api/v1/sessions/999/audio-pause", json={}, headers=nurse).status_code
        == 404
    )


def session_of(server: LiveServer, clinic: Clinic, position: int) -> int:
    chairs = httpx.get(
        f"{server.http_url}/api/v1/sites/{clinic.site_id}", headers=clinic.auth()
    ).json()["chairs"]
    session_id: int = chairs[position - 1]["session"]["id"]
    return session_id


def test_limit_override_is_kept_with_who_and_why_and_takes_effect(
    live_server: LiveServer, clinic: Clinic
) -> None:
    base = live_server.http_url
    session_id = session_of(live_server, clinic, 2)
    unknown = httpx.post(
        f"{base}/api/v1/sessions/{session_id}/limits",
        json={"rule_id": "spo2_lowish", "limit": 88, "reason": "COPD"},
        headers=clinic.auth("clinician"),
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "rule_id"]
    changed = httpx.post(
        f"{base}/api/v1/sessions/{session_id}/limits",
        json={
            "rule_id": "spo2_low_medium",
            "limit": 89,
            "reason": "COPD, baseline 91",
        },
        headers=clinic.auth("clinician"),
    )
    assert changed.status_code == 201, changed.text
    assert changed.json() == {**changed.json(), "old": 93, "new": 89, "by": "clinician"}
    with connect(
        f"{live_server.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
    ) as ws:
        snapshot(ws)
        # 92 % for 20 s: below the protocol's 93, above this patient's 89.
        post(live_server, clinic, clinic.device(2), spo2_trace([92] * 20))
        post(live_server, clinic, clinic.device(3), spo2_trace([92] * 20))
        raised = alarm_message(ws, "spo2_low_medium", "raised")
        assert raised["session_id"] != session_id, "the overridden session stayed quiet"


def test_active_alarms_survive_a_restart(
    live_server: LiveServer, clinic: Clinic, settings: Settings
) -> None:
    with connect(
        f"{live_server.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
    ) as ws:
        snapshot(ws)
        post(live_server, clinic, clinic.device(3), spo2_trace([84] * 3))
        raised = alarm_message(ws, "spo2_desat", "raised")["alarm"]
    assert raised["priority"] == "crisis"
    live_server.stop()

    restarted = LiveServer(create_app(settings))
    restarted.start()
    try:
        with connect(
            f"{restarted.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
        ) as ws:
            chairs = snapshot(ws)["chairs"]
            restored = {a["alarm_id"]: a for chair in chairs for a in chair["alarms"]}
            # Stored, reloaded by a new process and sent again: the same alarm, field for field.
            assert restored[raised["alarm_id"]] == raised
            response = httpx.post(
                f"{restarted.http_url}/api/v1/alarms/{raised['alarm_id']}/acknowledge",
                headers=clinic.auth(),
            )
            assert response.status_code == 200, response.text
            assert alarm_message(ws, "spo2_desat", "acknowledged")["actor"] == "nurse"
    finally:
        restarted.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_discharge_clears_the_sessions_alarms(live_server: LiveServer, clinic: Clinic) -> None:
    session_id = session_of(live_server, clinic, 1)
    with connect(
        f"{live_server.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
    ) as ws:
        snapshot(ws)
        post(live_server, clinic, clinic.device(1), spo2_trace([84] * 3))
        alarm_message(ws, "spo2_desat", "raised")
        response = httpx.post(
            f"{live_server.http_url}/api/v1/sessions/{session_id}/events",
            json={"kind": "discharge"},
            headers=clinic.auth(),
        )
        assert response.status_code == 201
        assert alarm_message(ws, "spo2_desat", "cleared")["session_id"] == session_id
    active = httpx.get(
        f"{live_server.http_url}/api/v1/sessions/{session_id}/alarms",
        params={"active": True},
        headers=clinic.auth(),
    ).json()
    assert active == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_baseline_survives_a_restart(
    live_server: LiveServer, clinic: Clinic, settings: Settings
) -> None:
    from monitor.vitals import Vital

    session_id = session_of(live_server, clinic, 1)  # the demo's chair 1 is in baseline
    now = datetime.now(UTC)
    for minutes_ago, (sys_value, dia_value) in ((6, (128, 80)), (1, (132, 82))):
        stamp = (now - timedelta(minutes=minutes_ago)).isoformat()
        post(
            live_server,
            clinic,
            clinic.device(1),
            [
                {"vital": "nibp_sys", "value": sys_value, "unit": "mm[Hg]", "device_time": stamp},
                {"vital": "nibp_dia", "value": dia_value, "unit": "mm[Hg]", "device_time": stamp},
            ],
        )
    engine = live_server.app.state.alarms.engine
    # The alarm engine takes a batch just after the device's answer, not before it.
    deadline = time.monotonic() + 5
    while engine.baseline(str(session_id), Vital.NIBP_SYS) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.baseline(str(session_id), Vital.NIBP_SYS) == 130
    live_server.stop()

    restarted = LiveServer(create_app(settings))
    restarted.start()
    try:
        restored = restarted.app.state.alarms.engine
        assert restored.baseline(str(session_id), Vital.NIBP_SYS) == 130
    finally:
        restarted.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_audio_pause_tells_every_screen_when_it_ends(
    live_server: LiveServer, clinic: Clinic
) -> None:
    session_id = session_of(live_server, clinic, 3)
    with connect(
        f"{live_server.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
    ) as ws:
        snapshot(ws)
        post(live_server, clinic, clinic.device(3), spo2_trace([84] * 3))
        alarm_message(ws, "spo2_desat", "raised")
        asked = datetime.now(UTC)
        response = httpx.post(
            f"{live_server.http_url}/api/v1/sessions/{session_id}/audio-pause",
            json={"seconds": 45},
            headers=clinic.auth(),
        )
        assert response.status_code == 200, response.text
        paused = alarm_message(ws, "spo2_desat", "audio_paused")
    until = datetime.fromisoformat(paused["audio_paused_until"])
    assert timedelta(seconds=44) < until - asked < timedelta(seconds=46)
    assert paused["actor"] == "nurse"
