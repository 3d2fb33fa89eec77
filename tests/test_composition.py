"""The composition root: the API stands on its own, and `vigil.server` adds the nurse
station behind the sign-in gate."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import PASSWORD, Clinic
from vigil.server import create_server


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_api_serves_without_the_station(settings: Settings, clinic: Clinic) -> None:
    with TestClient(create_app(settings)) as api:
        assert api.get("/healthz").json()["status"] == "ok"
        sites = api.get("/api/v1/sites", headers=clinic.auth("nurse"))
        assert [site["id"] for site in sites.json()] == [clinic.site_id]
        # Nothing answers the station's paths: the API alone has no dashboard mounted.
        assert api.get("/_dash-layout").status_code == 404
        assert api.get("/", headers={"accept": "text/html"}).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_server_mounts_the_station_behind_the_sign_in_gate(
    settings: Settings, clinic: Clinic
) -> None:
    with TestClient(create_server(settings)) as server:
        assert server.get("/healthz").json()["status"] == "ok"
        assert server.get("/_dash-layout").status_code == 401
        signed_in = server.post(
            "/login", data={"username": "nurse", "password": PASSWORD}, follow_redirects=False
        )
        assert signed_in.status_code == 303
        layout = server.get("/_dash-layout")
        assert layout.status_code == 200
        assert layout.headers["content-type"].startswith("application/json")
        page = server.get(f"/sites/{clinic.site_id}", headers={"accept": "text/html"})
        assert page.status_code == 200
        assert "<title>Vigil — nurse station</title>" in page.text
