"""Liveness, readiness and the metrics door, against real servers and real dependencies:
a scratch PostgreSQL database dropped under a running server, an MQTT adapter pointed at a
closed port, an alarm ticker that is stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.settings import Settings
from tests.conftest import Clinic, LiveServer, free_port

TOKEN = "metrics-scraper-secret"


def poll(url: str, want_status: int, timeout: float = 15.0) -> dict[str, Any]:
    """GET `url` until it answers `want_status`; its JSON body."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, timeout=5)
        if response.status_code == want_status:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, f"{url}: {response.status_code} {response.text}"
        time.sleep(0.1)


def metric(text_body: str, line_start: str) -> float:
    """The value of the one sample line that starts with `line_start`."""
    (line,) = [line for line in text_body.splitlines() if line.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def api_server(clinic: Clinic, tmp_path: Path) -> Iterator[LiveServer]:
    """The API alone (`create_app`) on a real uvicorn server, metrics on."""
    server = LiveServer(
        create_app(Settings(database_url=clinic.url, data_dir=tmp_path, metrics_token=TOKEN))
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_readyz_names_the_database_once_it_is_gone_and_healthz_stays_alive(
    api_server: LiveServer, clinic: Clinic, postgres_admin_url: str
) -> None:
    base = api_server.http_url
    ready = poll(f"{base}/readyz", 200)
    assert ready["status"] == "ready"
    assert ready["down"] == []
    assert ready["checks"]["database"]["ok"] is True
    assert ready["checks"]["database"]["detail"] == "postgresql"
    assert ready["checks"]["alarm_tick"]["ok"] is True
    scrape = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metric(scrape.text, "vigil_database_up") == 1

    # The server's scratch database goes away under it (every connection terminated).
    name = make_url(clinic.url).database
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()

    down = poll(f"{base}/readyz", 503)
    assert down["status"] == "not ready"
    assert down["down"] == ["database"]
    assert down["checks"]["database"]["ok"] is False
    assert down["checks"]["database"]["detail"].startswith("postgresql: ")
    assert down["checks"]["alarm_tick"]["ok"] is True  # the alarm clock is not the database
    # Liveness makes no database call: the process is alive and says so.
    alive = httpx.get(f"{base}/healthz")
    assert alive.status_code == 200
    assert alive.json()["status"] == "ok"
    scrape = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metric(scrape.text, "vigil_database_up") == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_names_the_mqtt_adapter_that_cannot_reach_its_broker(
    clinic: Clinic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()  # nothing listens there
    monkeypatch.setenv("VIGIL_ADAPTERS", "mqtt")
    monkeypatch.setenv("VIGIL_MQTT_PORT", str(closed))
    monkeypatch.setenv("VIGIL_MQTT_RECONNECT_MIN_S", "0.2")
    app = create_app(Settings(database_url=clinic.url, data_dir=tmp_path, metrics_token=TOKEN))
    with TestClient(app) as client:
        response = client.get("/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["down"] == ["adapter:mqtt"]
        mqtt = body["checks"]["adapter:mqtt"]
        assert mqtt["ok"] is False
        assert mqtt["detail"].split(":")[0] in {"connecting", "disconnected"}
        assert str(closed) not in response.text  # no host or port on an open route
        assert body["checks"]["database"]["ok"] is True
        scrape = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert metric(scrape, 'vigil_adapter_state{adapter="mqtt",state="connected"}') == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_names_the_alarm_tick_once_the_ticker_stops(clinic: Clinic, tmp_path: Path) -> None:
    settings = Settings(
        database_url=clinic.url, data_dir=tmp_path, ready_max_tick_age_s=1.5, metrics_token=TOKEN
    )
    app = create_app(settings)
    with TestClient(app) as client:
        time.sleep(1.2)  # at least one turn of the 1 s ticker
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["alarm_tick"]["age_s"] <= 1.5

        client.portal.call(app.state.alarms.stop)  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while (response := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "the tick age never went past 1.5 s"
            time.sleep(0.1)
        assert response.status_code == 503
        body = response.json()
        assert body["down"] == ["alarm_tick"]
        assert body["checks"]["alarm_tick"]["age_s"] > 1.5
        scrape = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert metric(scrape, "vigil_alarm_tick_age_seconds") > 1.5


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_answer_only_the_bearer_of_the_token(clinic: Clinic, tmp_path: Path) -> None:
    off = create_app(Settings(database_url=clinic.url, data_dir=tmp_path))
    with TestClient(off) as client:
        assert client.get("/metrics").status_code == 404
        scraper = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/metrics", headers=scraper).status_code == 404
    on = create_app(Settings(database_url=clinic.url, data_dir=tmp_path, metrics_token=TOKEN))
    with TestClient(on) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        # A person's API token is not the scraper's.
        assert client.get("/metrics", headers=clinic.auth("admin")).status_code == 401
        right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        assert right.headers["content-type"].startswith("text/plain")
        assert metric(right.text, "vigil_database_up") == 1
