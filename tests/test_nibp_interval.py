"""A session's NIBP interval: set through the API, audited, in force in the alarm engine at
once (the NIBP-stale alarm waits the interval plus its grace), on every screen, and kept
across a restart. On SQLite and PostgreSQL (the column comes from migration 0005)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.sync.client import connect

from app.alarms.nibp import ALLOWED_NIBP_INTERVALS_S
from app.alarms.service import AlarmService
from app.main import create_app
from app.settings import Settings
from dashboard.app import NIBP_INTERVAL_CHOICES
from monitor.lifecycle import TransitionEvent
from tests.conftest import Clinic, LiveServer
from tests.test_alarms_server import session_of, snapshot

GRACE_S = 120  # nibp_stale's grace in the default protocol (docs/ALARMS.md)


def with_engine_probe(app: FastAPI) -> FastAPI:
    """`app` with one test-only route: which technical alarms the server's engine would
    raise for a session `after_s` from now, its monitor still sending (so that the
    device-silent alarm, which suppresses NIBP stale, stays quiet). It asks a copy, made
    on the server's own event loop: the server's alarms are left as they are."""

    async def raised_after(session_id: int, after_s: float) -> list[str]:
        alarms: AlarmService = app.state.alarms
        engine = copy.deepcopy(alarms.engine)
        key, at = str(session_id), time.time() + after_s
        engine.ingest(engine.batch([(key, "hr", 72.0, at - 1)]))
        return [
            t.rule_id
            for t in engine.tick(at)
            if t.session_key == key and t.event is TransitionEvent.RAISED
        ]

    app.add_api_route("/test/raised-after", raised_after, methods=["GET"])
    return app


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    live = LiveServer(with_engine_probe(create_app(settings)))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def raised_after(server: LiveServer, session_id: int, after_s: float) -> list[str]:
    response = httpx.get(
        f"{server.http_url}/test/raised-after",
        params={"session_id": session_id, "after_s": after_s},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    rules: list[str] = response.json()
    return rules


def put_interval(
    server: LiveServer, clinic: Clinic, session_id: int, body: Any, user: str = "nurse"
) -> httpx.Response:
    return httpx.put(
        f"{server.http_url}/api/v1/sessions/{session_id}/nibp-interval",
        json=body,
        headers=clinic.auth(user),
        timeout=10,
    )


def test_the_interval_decides_when_nibp_stale_is_raised(server: LiveServer, clinic: Clinic) -> None:
    session_id = session_of(server, clinic, 2)  # in infusion: the protocol's 5 min
    # No reading since the server started watching: stale after 5 + 2 min, not 3.
    assert "nibp_stale" not in raised_after(server, session_id, 60 + GRACE_S + 1)
    assert "nibp_stale" in raised_after(server, session_id, 300 + GRACE_S + 1)

    answer = put_interval(server, clinic, session_id, {"seconds": 60})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "session_id": session_id,
        "nibp_interval_s": 60,
        "interval_s": 60,
        "stale_after_s": 60 + GRACE_S,
    }
    # At once: 1 + 2 min without a reading is stale now, and 100 s is not yet.
    assert "nibp_stale" in raised_after(server, session_id, 60 + GRACE_S + 1)
    assert "nibp_stale" not in raised_after(server, session_id, 100)

    # No schedule (manual readings only): never stale.
    answer = put_interval(server, clinic, session_id, {"seconds": 0}, user="clinician")
    assert answer.json()["stale_after_s"] is None
    assert "nibp_stale" not in raised_after(server, session_id, 3600)
    # Back to the protocol's interval for the phase.
    answer = put_interval(server, clinic, session_id, {"seconds": None})
    assert answer.json() == {
        "session_id": session_id,
        "nibp_interval_s": None,
        "interval_s": 300,
        "stale_after_s": 300 + GRACE_S,
    }
    assert "nibp_stale" not in raised_after(server, session_id, 60 + GRACE_S + 1)


def test_the_interval_is_stored_audited_and_sent_to_every_screen(
    server: LiveServer, clinic: Clinic
) -> None:
    session_id = session_of(server, clinic, 3)
    with connect(
        f"{server.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
    ) as ws:
        before = snapshot(ws)
        chair = next(c for c in before["chairs"] if c["session"]["session_id"] == session_id)
        assert chair["session"]["nibp_interval_s"] is None
        assert put_interval(server, clinic, session_id, {"seconds": 120}).status_code == 200
        while True:
            delta = json.loads(ws.recv(timeout=5))
            if delta["type"] == "session":
                break
        assert (delta["chair_id"], delta["event"]) == (chair["chair_id"], "nibp_interval")
        assert delta["session"]["nibp_interval_s"] == 120

    session = httpx.get(
        f"{server.http_url}/api/v1/sessions/{session_id}", headers=clinic.auth(), timeout=10
    ).json()
    assert session["nibp_interval_s"] == 120
    audit = httpx.get(
        f"{server.http_url}/api/v1/audit",
        params={"action": "nibp_interval_set"},
        headers=clinic.auth("admin"),
        timeout=10,
    ).json()
    assert [(e["actor"], e["target_id"], e["detail"]) for e in audit] == [
        ("nurse", str(session_id), {"old_s": None, "new_s": 120})
    ]


def test_only_a_cuff_interval_is_accepted_and_the_field_is_named(
    server: LiveServer, clinic: Clinic
) -> None:
    session_id = session_of(server, clinic, 1)
    for body in ({"seconds": 45}, {"seconds": "five"}, {}, {"seconds": 60, "minutes": 1}):
        refused = put_interval(server, clinic, session_id, body)
        assert refused.status_code == 422, body
        assert {tuple(p["loc"][:2]) for p in refused.json()["detail"]} <= {
            ("body", "seconds"),
            ("body", "minutes"),
        }, refused.json()
    assert (
        "45 s is not a cuff interval"
        in put_interval(server, clinic, session_id, {"seconds": 45}).text
    )
    assert put_interval(server, clinic, 999, {"seconds": 60}).status_code == 404
    unsigned = httpx.put(
        f"{server.http_url}/api/v1/sessions/{session_id}/nibp-interval",
        json={"seconds": 60},
        timeout=10,
    )
    assert unsigned.status_code == 401
    discharged = httpx.post(
        f"{server.http_url}/api/v1/sessions/{session_id}/events",
        json={"kind": "discharge"},
        headers=clinic.auth(),
        timeout=10,
    )
    assert discharged.status_code == 201
    assert put_interval(server, clinic, session_id, {"seconds": 60}).status_code == 409


def test_the_interval_survives_a_restart(
    server: LiveServer, clinic: Clinic, settings: Settings
) -> None:
    session_id = session_of(server, clinic, 2)
    assert put_interval(server, clinic, session_id, {"seconds": 60}).status_code == 200
    server.stop()

    restarted = LiveServer(with_engine_probe(create_app(settings)))
    restarted.start()
    try:
        assert "nibp_stale" in raised_after(restarted, session_id, 60 + GRACE_S + 1)
        with connect(
            f"{restarted.ws_url}/ws/sites/{clinic.site_id}", additional_headers=clinic.auth()
        ) as ws:
            chairs = snapshot(ws)["chairs"]
        [chair] = [c for c in chairs if c["session"]["session_id"] == session_id]
        assert chair["session"]["nibp_interval_s"] == 60
    finally:
        restarted.stop()


def test_the_chair_view_offers_exactly_the_intervals_the_server_accepts() -> None:
    assert sorted(seconds for _, seconds in NIBP_INTERVAL_CHOICES) == sorted(
        ALLOWED_NIBP_INTERVALS_S
    )
