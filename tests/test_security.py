"""Who may do what: every route × every role and site, sign-in, tokens and the audit trail."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from app.auth import repository as auth_repository
from app.auth.tokens import USER_TOKEN_PREFIX, new_token, token_hash
from app.main import create_app
from app.settings import Settings
from app.storage.models import (
    Alarm,
    AuditEvent,
    Chair,
    Device,
    DeviceCredential,
    InfusionSession,
    Patient,
    Role,
    SessionPhase,
    Site,
    TokenKind,
    User,
)
from app.timeutil import utcnow
from tests.conftest import PASSWORD, Clinic, LiveServer, add_person

NURSE, CLINICIAN, ADMIN = Role.NURSE, Role.CLINICIAN, Role.ADMIN

# Every operation in the OpenAPI schema: the least role it needs, and which path parameter
# names the site it acts on ("site", "session", "chair", "alarm", "patient": a patient's
# sessions) or None (not site-bound).
# A new route fails `test_every_route_is_in_the_matrix` until it is classified here.
MATRIX: dict[tuple[str, str], tuple[Role | None, str | None]] = {
    ("GET", "/api/v1/auth/me"): (None, None),
    ("POST", "/api/v1/auth/tokens"): (None, None),
    ("POST", "/api/v1/auth/sign-out"): (None, None),
    ("GET", "/api/v1/sites"): (None, None),
    ("GET", "/api/v1/sites/{site_id}"): (NURSE, "site"),
    ("GET", "/api/v1/sites/{site_id}/alarms"): (NURSE, "site"),
    ("POST", "/api/v1/chairs/{chair_id}/sessions"): (NURSE, "chair"),
    ("GET", "/api/v1/sessions/{session_id}"): (NURSE, "session"),
    ("POST", "/api/v1/sessions/{session_id}/events"): (NURSE, "session"),
    ("GET", "/api/v1/sessions/{session_id}/alarms"): (NURSE, "session"),
    ("POST", "/api/v1/sessions/{session_id}/audio-pause"): (NURSE, "session"),
    ("PUT", "/api/v1/sessions/{session_id}/nibp-interval"): (NURSE, "session"),
    ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"): (NURSE, "alarm"),
    ("POST", "/api/v1/sessions/{session_id}/limits"): (CLINICIAN, "session"),
    ("GET", "/api/v1/sessions/{session_id}/export/csv"): (CLINICIAN, "session"),
    ("GET", "/api/v1/sessions/{session_id}/export/hl7v2"): (CLINICIAN, "session"),
    ("GET", "/api/v1/sessions/{session_id}/export/fhir"): (CLINICIAN, "session"),
    ("GET", "/api/v1/users"): (ADMIN, None),
    ("POST", "/api/v1/users"): (ADMIN, None),
    ("GET", "/api/v1/users/{user_id}"): (ADMIN, None),
    ("PATCH", "/api/v1/users/{user_id}"): (ADMIN, None),
    ("POST", "/api/v1/users/{user_id}/revoke-tokens"): (ADMIN, None),
    ("GET", "/api/v1/device-credentials"): (ADMIN, None),
    ("POST", "/api/v1/device-credentials"): (ADMIN, None),
    ("DELETE", "/api/v1/device-credentials/{credential_id}"): (ADMIN, None),
    ("GET", "/api/v1/audit"): (ADMIN, None),
    ("GET", "/api/v1/audit/export.csv"): (ADMIN, None),
    ("GET", "/api/v1/audit/export"): (ADMIN, None),
    ("GET", "/api/v1/adapters"): (ADMIN, None),
    ("POST", "/api/v1/devices"): (ADMIN, None),
    ("GET", "/api/v1/devices"): (ADMIN, None),
    ("GET", "/api/v1/unbound-samples"): (ADMIN, None),
    ("PUT", "/api/v1/devices/{identifier}/binding"): (ADMIN, None),
    ("DELETE", "/api/v1/devices/{identifier}/binding"): (ADMIN, None),
    ("GET", "/api/v1/devices/{identifier}/unbound-samples"): (ADMIN, None),
    ("GET", "/api/v1/devices/{identifier}"): (ADMIN, None),
    ("GET", "/api/v1/sessions/{session_id}/trend"): (NURSE, "session"),
    ("GET", "/api/v1/sites/{site_id}/sparklines"): (NURSE, "site"),
    ("GET", "/api/v1/sites/{site_id}/station-state"): (NURSE, "site"),
    ("GET", "/api/v1/protocol"): (None, None),
    ("POST", "/api/v1/sites"): (ADMIN, None),
    ("POST", "/api/v1/sites/{site_id}/chairs"): (ADMIN, None),
    ("GET", "/api/v1/review/sessions"): (CLINICIAN, None),
    ("GET", "/api/v1/review/sessions/{session_id}"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/sessions/{session_id}/trace"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/sessions/{session_id}/alarm-log"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/sessions/{session_id}/alarm-log.csv"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/sessions/{session_id}/report.html"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/sessions/{session_id}/report.pdf"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/sessions/{session_id}/annotations"): (CLINICIAN, "session"),
    ("POST", "/api/v1/review/sessions/{session_id}/annotations"): (CLINICIAN, "session"),
    ("GET", "/api/v1/review/patients/{patient_id}/sessions"): (CLINICIAN, "patient"),
    ("PATCH", "/api/v1/patients/{patient_id}"): (CLINICIAN, "patient"),
    ("GET", "/api/v1/review/sites/{site_id}/figures"): (CLINICIAN, "site"),
}
# Open to anyone: liveness and readiness for load balancers, and the doors to sign in.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/api/v1/auth/token")}
# For devices, with a device credential (people's tokens are refused).
DEVICE_ONLY = {("POST", "/api/v1/observations"), ("POST", "/api/v1/alerts")}
RANK = {NURSE: 1, CLINICIAN: 2, ADMIN: 3}


@dataclass
class World:
    """The clinic, plus a second site whose staff and records the clinic's staff may not see."""

    clinic: Clinic
    app: FastAPI
    own: dict[str, Any]  # path parameters of resources at the clinic's site
    other: dict[str, Any]  # …and at the other site
    other_nurse: str  # a token of a nurse of the other site

    def token(self, role: Role) -> str:
        """A fresh API token for the clinic's user of `role` (some routes revoke tokens)."""
        with Session(create_engine(self.clinic.url)) as session:
            user = session.scalars(select(User).where(User.username == role.value)).one()
            token = new_token(USER_TOKEN_PREFIX)
            now = utcnow()
            auth_repository.add_token(
                session, user.id, TokenKind.API, token_hash(token), "matrix", now,
                now + timedelta(hours=1),
            )  # fmt: skip
        return token


def _alarm(session_id: int, chair_id: int, alarm_id: str) -> Alarm:
    return Alarm(
        id=alarm_id,
        session_id=session_id,
        chair_id=chair_id,
        rule_id="spo2_desat",
        kind="physiological",
        priority="crisis",
        state="raised",
        text="SpO2 84 < 85",
        value=84,
        limit_value=85,
        condition_active=True,
        audio_paused=False,
        raised_at=utcnow(),
        protocol_version="test",
        alarm_group="spo2_low",
    )


@pytest.fixture
def world(clinic: Clinic, app: FastAPI) -> World:
    now = utcnow()
    with Session(create_engine(clinic.url)) as session:
        site = Site(name="Other clinic", created_at=now)
        session.add(site)
        session.flush()
        chair = Chair(site_id=site.id, name="Other chair", position=1)
        session.add(chair)
        session.flush()
        session.add(Device(identifier="other-monitor", chair_id=chair.id, created_at=now))
        patient = Patient(pseudonym="P-OTHER", initials="O.T.")
        session.add(patient)
        session.flush()
        other_session = InfusionSession(
            chair_id=chair.id, patient_id=patient.id, phase=SessionPhase.INFUSION, started_at=now
        )
        session.add(other_session)
        own_chair = session.scalars(select(Chair).where(Chair.site_id == clinic.site_id)).first()
        assert own_chair is not None
        own_session = session.scalars(
            select(InfusionSession).where(InfusionSession.chair_id == own_chair.id)
        ).one()
        session.flush()
        session.add(_alarm(own_session.id, own_chair.id, "own-alarm"))
        session.add(_alarm(other_session.id, chair.id, "other-alarm"))
        target = User(
            username="target",
            display_name="Target",
            role=NURSE,
            password_hash="x",
            active=True,
            all_sites=False,
            failed_sign_ins=0,
            created_at=now,
        )
        session.add(target)
        credential = DeviceCredential(
            token_hash="0" * 64, label="matrix", site_id=site.id, created_at=now, created_by="t"
        )
        session.add(credential)
        session.commit()
        other_nurse = add_person(session, "other.nurse", NURSE, [site.id])
        common = {
            "user_id": target.id,
            "credential_id": credential.id,
            "identifier": clinic.device(1),
        }
        own = {
            **common,
            "site_id": clinic.site_id,
            "session_id": own_session.id,
            "chair_id": own_chair.id,
            "alarm_id": "own-alarm",
            "patient_id": own_session.patient_id,
        }
        other = {
            **common,
            "site_id": site.id,
            "session_id": other_session.id,
            "chair_id": chair.id,
            "alarm_id": "other-alarm",
            "patient_id": patient.id,
        }
    return World(clinic, app, own, other, other_nurse)


def drain(ws: ClientConnection) -> None:
    """Read until the server closes the connection (which raises)."""
    while True:
        ws.recv(timeout=3)


def operations(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }


def call(client: TestClient, method: str, path: str, params: dict[str, Any], token: str | None):  # type: ignore[no-untyped-def]
    url = path.format(**params)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, url, headers=headers, json={} if method != "GET" else None)


@pytest.fixture
def client(app: FastAPI, world: World) -> Iterator[TestClient]:
    # After `world`: the server starts with its alarms already in the database.
    with TestClient(app) as test_client:
        yield test_client


def test_every_route_is_in_the_matrix(app: FastAPI) -> None:
    unclassified = operations(app) - set(MATRIX) - PUBLIC - DEVICE_ONLY
    assert not unclassified, f"classify these routes in MATRIX: {sorted(unclassified)}"
    gone = set(MATRIX) - operations(app)
    assert not gone, f"routes in MATRIX that no longer exist: {sorted(gone)}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_route_refuses_anonymous_wrong_role_and_wrong_site(
    client: TestClient, world: World
) -> None:
    refused: list[str] = []
    for (method, path), (least, scope) in sorted(MATRIX.items()):
        where = f"{method} {path}"
        anonymous = call(client, method, path, world.own, None)
        if anonymous.status_code != 401:
            refused.append(f"{where}: anonymous got {anonymous.status_code}")
        device = call(client, method, path, world.own, world.clinic.device_token)
        if device.status_code != 401:
            refused.append(f"{where}: a device credential got {device.status_code}")
        for role in Role:
            response = call(client, method, path, world.own, world.token(role))
            allowed = least is None or RANK[role] >= RANK[least]
            if allowed and response.status_code in (401, 403):
                refused.append(f"{where}: {role.value} was refused: {response.text}")
            if not allowed and response.status_code != 403:
                refused.append(f"{where}: {role.value} got {response.status_code}, not 403")
        if scope is not None:
            # The least role that may use the route, but at the other site.
            response = call(client, method, path, world.other, world.token(least or NURSE))
            if response.status_code != 403:
                refused.append(f"{where}: other site's resource gave {response.status_code}")
            outsider = call(client, method, path, world.own, world.other_nurse)
            if least is NURSE and outsider.status_code != 403:
                refused.append(f"{where}: the other site's nurse got {outsider.status_code}")
    assert not refused, "\n".join(refused)


def test_public_routes_and_pages_need_no_credential_but_the_rest_do(
    client: TestClient, world: World
) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200
    for path in ("/openapi.json", "/docs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=world.clinic.auth("nurse")).status_code == 200
    # The nurse station: a browser is sent to sign in; a script gets a 401.
    page = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/"
    assert client.get("/_dash-layout").status_code == 401
    assert client.post("/_dash-update-component", json={}).status_code == 401


def test_api_sign_in_issues_a_working_token_and_failures_slow_but_never_lock(
    client: TestClient, world: World
) -> None:
    good = client.post("/api/v1/auth/token", json={"username": "nurse", "password": PASSWORD})
    assert good.status_code == 200, good.text
    token = good.json()["access_token"]
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {**me.json(), "username": "nurse", "role": "nurse"}
    assert me.json()["site_ids"] == [world.clinic.site_id]

    for _ in range(3):
        wrong = client.post("/api/v1/auth/token", json={"username": "nurse", "password": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "wrong username or password"
    # This address must now wait before trying the account again, even with the password…
    slowed = client.post("/api/v1/auth/token", json={"username": "nurse", "password": PASSWORD})
    assert slowed.status_code == 429
    assert 0 < int(slowed.headers["retry-after"]) <= 60
    # …but the nurse, at her own workstation, is not kept out.
    workstation = TestClient(world.app, client=("10.20.0.7", 50000))
    own = workstation.post("/api/v1/auth/token", json={"username": "nurse", "password": PASSWORD})
    assert own.status_code == 200, own.text
    # An admin's unlock ends the wait of the address that failed.
    nurse_id = me.json()["user_id"]
    unlocked = client.patch(
        f"/api/v1/users/{nurse_id}", json={"unlock": True}, headers=world.clinic.auth("admin")
    )
    assert unlocked.status_code == 200
    again = client.post("/api/v1/auth/token", json={"username": "nurse", "password": PASSWORD})
    assert again.status_code == 200

    with Session(create_engine(world.clinic.url)) as session:
        outcomes = [
            (event.outcome, event.source)
            for event in session.scalars(
                select(AuditEvent).where(AuditEvent.action == "sign_in").order_by(AuditEvent.id)
            )
        ]
    here = "testclient"
    assert outcomes == [
        ("ok", here), *[("failed", here)] * 3, ("throttled", here), ("ok", "10.20.0.7"),
        ("ok", here),
    ]  # fmt: skip


def test_sign_in_attempts_are_rate_limited_per_address(client: TestClient, world: World) -> None:
    answers = [
        client.post("/api/v1/auth/token", json={"username": f"nobody{n}", "password": "x"})
        for n in range(12)
    ]
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert answers[10].status_code == 429
    assert int(answers[10].headers["retry-after"]) > 0


def test_expired_and_revoked_tokens_stop_working_at_once(client: TestClient, world: World) -> None:
    clinic = world.clinic
    with Session(create_engine(clinic.url)) as session:
        nurse = session.scalars(select(User).where(User.username == "nurse")).one()
        expired = new_token(USER_TOKEN_PREFIX)
        auth_repository.add_token(
            session, nurse.id, TokenKind.API, token_hash(expired), "old",
            utcnow() - timedelta(days=2), utcnow() - timedelta(seconds=1),
        )  # fmt: skip
        nurse_id = nurse.id
    refused = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401
    assert client.get("/api/v1/auth/me", headers=clinic.auth("nurse")).status_code == 200
    revoked = client.post(f"/api/v1/users/{nurse_id}/revoke-tokens", headers=clinic.auth("admin"))
    assert revoked.json()["revoked"] >= 1
    assert client.get("/api/v1/auth/me", headers=clinic.auth("nurse")).status_code == 401
    # Deactivating an account ends its sign-ins too.
    clinician = client.get("/api/v1/auth/me", headers=clinic.auth("clinician")).json()
    client.patch(
        f"/api/v1/users/{clinician['user_id']}",
        json={"active": False},
        headers=clinic.auth("admin"),
    )
    assert client.get("/api/v1/auth/me", headers=clinic.auth("clinician")).status_code == 401


def test_users_are_created_with_a_hashed_password_and_named_errors(
    client: TestClient, world: World
) -> None:
    admin = world.clinic.auth("admin")
    body = {
        "username": "rn.lee",
        "display_name": "Robin Lee",
        "role": "nurse",
        "password": "a long enough passphrase",
        "site_ids": [world.clinic.site_id],
    }
    created = client.post("/api/v1/users", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["site_ids"] == [world.clinic.site_id]
    with Session(create_engine(world.clinic.url)) as session:
        stored = session.scalars(select(User.password_hash).where(User.username == "rn.lee")).one()
    assert stored.startswith("$argon2id$")
    assert "passphrase" not in stored
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    short = client.post(
        "/api/v1/users", json={**body, "username": "x2", "password": "short"}, headers=admin
    )
    assert short.status_code == 422
    assert short.json()["detail"][0]["loc"] == ["body", "password"]
    bad_site = client.post(
        "/api/v1/users", json={**body, "username": "x3", "site_ids": [999]}, headers=admin
    )
    assert bad_site.status_code == 404
    assert "999" in bad_site.json()["detail"]
    signed_in = client.post(
        "/api/v1/auth/token", json={"username": "rn.lee", "password": "a long enough passphrase"}
    )
    assert signed_in.status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_browser_sign_in_sets_safe_cookies_and_writes_need_the_csrf_header(
    client: TestClient, world: World
) -> None:
    clinic = world.clinic
    foreign = client.post(
        "/login",
        data={"username": "nurse", "password": PASSWORD},
        headers={"origin": "http://evil.example", "host": "testserver"},
        follow_redirects=False,
    )
    assert foreign.status_code == 403
    wrong = client.post("/login", data={"username": "nurse", "password": "nope"})
    assert wrong.status_code == 401
    assert "wrong username or password" in wrong.text.lower()
    response = client.post(
        "/login",
        data={"username": "nurse", "password": PASSWORD, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/", "never an open redirect"
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("vigil_session="))
    csrf_cookie = next(c for c in cookies if c.startswith("vigil_csrf="))
    assert "HttpOnly" in session_cookie
    assert "samesite=strict" in session_cookie.lower()
    assert "HttpOnly" not in csrf_cookie, "the page must read it to echo it"
    csrf = client.cookies["vigil_csrf"]

    assert client.get("/", headers={"accept": "text/html"}).status_code == 200
    assert client.get("/api/v1/auth/me").json()["username"] == "nurse"
    url = f"/api/v1/alarms/{world.own['alarm_id']}/acknowledge"
    assert client.post(url).status_code == 403, "a cookie alone cannot write"
    assert client.post(url, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post(url, headers={"X-CSRF-Token": csrf}).status_code == 200
    # Dash callbacks go through the same gate.
    assert client.post("/_dash-update-component", json={}).status_code == 403

    signed_out = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert signed_out.status_code == 303
    client.cookies.clear()
    assert client.get("/api/v1/auth/me", headers=clinic.auth("nurse")).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_site_websocket_refuses_bad_credentials_and_other_sites(
    settings: Settings, world: World
) -> None:
    clinic = world.clinic
    server = LiveServer(create_app(settings.model_copy(update={"heartbeat_s": 0.2})))
    server.start()
    try:
        url = f"{server.ws_url}/ws/sites/{clinic.site_id}"
        for headers in (
            {},
            {"Authorization": "Bearer vgu_forged"},
            {"Authorization": f"Bearer {clinic.device_token}"},
            {"Authorization": f"Bearer {world.other_nurse}"},
        ):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, additional_headers=headers).close()
            assert refused.value.response.status_code == 403
        # A browser's cookie counts only from Vigil's own page (Origin = this host).
        login = httpx.post(
            f"{server.http_url}/login",
            data={"username": "nurse", "password": PASSWORD},
            follow_redirects=False,
        )
        cookie = f"vigil_session={login.cookies['vigil_session']}"
        with pytest.raises(InvalidStatus):
            connect(
                url, additional_headers={"Cookie": cookie}, origin=Origin("http://evil.example")
            ).close()
        with connect(
            url,
            additional_headers={"Cookie": cookie},
            origin=Origin(server.http_url),
        ) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"

        # Revoking the token ends an open feed within a heartbeat period.
        token = world.token(NURSE)
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
            me = httpx.get(
                f"{server.http_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
            ).json()
            httpx.post(
                f"{server.http_url}/api/v1/users/{me['user_id']}/revoke-tokens",
                headers=clinic.auth("admin"),
            )
            with pytest.raises(ConnectionClosed) as closed:
                drain(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401
    finally:
        server.stop()


def test_acts_are_audited_and_the_trail_is_append_only(client: TestClient, world: World) -> None:
    clinic = world.clinic
    session_id = world.own["session_id"]
    assert (
        client.post(
            f"/api/v1/alarms/{world.own['alarm_id']}/acknowledge", headers=clinic.auth("nurse")
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"/api/v1/sessions/{session_id}/audio-pause",
            json={"seconds": 60},
            headers=clinic.auth("nurse"),
        ).status_code
        == 200
    )
    assert (
        client.get(
            f"/api/v1/sessions/{session_id}/export/csv", headers=clinic.auth("clinician")
        ).status_code
        == 200
    )
    denied = client.post(
        f"/api/v1/sessions/{session_id}/limits",
        json={"rule_id": "spo2_low_medium", "limit": 90, "reason": "x"},
        headers=clinic.auth("nurse"),
    )
    assert denied.status_code == 403

    issued = client.post(
        "/api/v1/device-credentials",
        json={"label": "spare", "device_id": clinic.device(2)},
        headers=clinic.auth("admin"),
    ).json()
    client.delete(f"/api/v1/device-credentials/{issued['id']}", headers=clinic.auth("admin"))
    client.delete(f"/api/v1/devices/{clinic.device(3)}/binding", headers=clinic.auth("admin"))
    trail = client.get("/api/v1/audit", headers=clinic.auth("admin")).json()
    acts = {(e["action"], e["actor"], e["outcome"]) for e in trail}
    assert ("device_credential_created", "admin", "ok") in acts
    assert ("device_credential_revoked", "admin", "ok") in acts
    assert ("device_unbound", "admin", "ok") in acts
    assert ("alarm_acknowledged", "nurse", "ok") in acts
    assert ("audio_paused", "nurse", "ok") in acts
    assert ("session_exported", "clinician", "ok") in acts
    assert ("access_denied", "nurse", "denied") in acts
    ack = next(e for e in trail if e["action"] == "alarm_acknowledged")
    assert ack["site_id"] == clinic.site_id
    assert ack["target_id"] == world.own["alarm_id"]
    assert ack["source"]
    exported = client.get(
        "/api/v1/audit/export.csv",
        params={"action": "audio_paused"},
        headers=clinic.auth("admin"),
    )
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.strip().splitlines()
    assert lines[0].startswith("id,at,actor,action")
    assert len(lines) == 2
    assert ",nurse,audio_paused," in lines[1]

    engine = create_engine(clinic.url)
    for statement in ("UPDATE audit_events SET actor = 'someone else'", "DELETE FROM audit_events"):
        with engine.begin() as connection, pytest.raises(DBAPIError):
            connection.execute(text(statement))
    engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_health_data_reaches_the_application_log(
    client: TestClient, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    clinic = world.clinic
    caplog.set_level(logging.DEBUG)
    stamp = datetime.now(UTC).isoformat()
    client.post(
        "/api/v1/observations",
        json={
            "device_id": clinic.device(1),
            "observations": [{"vital": "spo2", "value": 83.7, "unit": "%", "device_time": stamp}],
        },
        headers=clinic.device_auth,
    )
    client.post(
        f"/api/v1/chairs/{world.own['chair_id']}/sessions",
        json={"patient": {"pseudonym": "P-SECRET-77", "initials": "Q.Z."}},
        headers=clinic.auth("nurse"),
    )
    client.post(f"/api/v1/alarms/{world.own['alarm_id']}/acknowledge", headers=clinic.auth("nurse"))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "audit alarm_acknowledged" in logged, "the log does record acts"
    for secret in ("83.7", "P-SECRET-77", "Q.Z.", "SpO2 84", PASSWORD):
        assert secret not in logged


def test_the_nurse_station_lists_and_opens_only_the_viewers_sites(world: World) -> None:
    import flask

    from app.auth.dash_scope import ViewerScopedDirectory
    from app.auth.web import VIEWER_HEADER
    from app.sites.directory import DatabaseSiteDirectory

    directory = ViewerScopedDirectory(DatabaseSiteDirectory(world.app.state.db))
    clinic_site, other_site = world.own["site_id"], world.other["site_id"]
    nurse = json.dumps({"user": "nurse", "name": "N", "role": "nurse", "sites": [clinic_site]})
    admin = json.dumps({"user": "admin", "name": "A", "role": "admin", "sites": None})
    server = flask.Flask(__name__)
    with server.test_request_context(headers={VIEWER_HEADER: nurse}):
        assert [site.site_id for site in directory.sites()] == [clinic_site]
        assert len(directory.chairs(clinic_site)) == 3
        with pytest.raises(PermissionError):
            directory.chairs(other_site)
    with server.test_request_context(headers={VIEWER_HEADER: admin}):
        assert {site.site_id for site in directory.sites()} == {clinic_site, other_site}
    with server.test_request_context(), pytest.raises(PermissionError):
        directory.sites()


def test_an_admin_adds_sites_and_chairs_and_gives_people_access(
    client: TestClient, world: World
) -> None:
    admin = world.clinic.auth("admin")
    site = client.post("/api/v1/sites", json={"name": "North clinic"}, headers=admin)
    assert site.status_code == 201, site.text
    site_id = site.json()["id"]
    assert (
        client.post("/api/v1/sites", json={"name": "North clinic"}, headers=admin).status_code
        == 409
    )
    chair = client.post(f"/api/v1/sites/{site_id}/chairs", json={"name": "Chair N1"}, headers=admin)
    assert chair.status_code == 201
    assert [(c["name"], c["position"]) for c in chair.json()["chairs"]] == [("Chair N1", 1)]
    nurse = world.clinic.auth("nurse")
    assert client.get(f"/api/v1/sites/{site_id}", headers=nurse).status_code == 403
    me = client.get("/api/v1/auth/me", headers=nurse).json()
    client.patch(
        f"/api/v1/users/{me['user_id']}",
        json={"site_ids": [world.clinic.site_id, site_id]},
        headers=admin,
    )
    assert client.get(f"/api/v1/sites/{site_id}", headers=nurse).status_code == 200
    protocol = client.get("/api/v1/protocol", headers=nurse).json()
    assert protocol["version"]
    assert "spo2_desat" in {rule["id"] for rule in protocol["rules"]}
    trail = client.get("/api/v1/audit", headers=admin).json()
    acts = [(e["action"], e["site_id"]) for e in trail]
    assert ("site_created", site_id) in acts
    assert ("chair_created", site_id) in acts
    assert ("user_changed", None) in acts
