"""Out-of-range ids and times are a 422 naming the field, never a 500, on both databases.

Each variant here was a 500 once: an integer above the database's INTEGER (or above 2^63,
which no driver binds), or a time whose conversion to UTC leaves Python's years 1–9999
(OverflowError), or one a day from that edge, which overflows when a range is widened.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import Clinic

BIG_IDS = [2**31 + 5, 2**63 + 5]
EDGE_TIMES = [
    "0001-01-01T00:00:00+16:00",  # its UTC would be in year 0
    "9999-12-31T23:59:59-16:00",  # its UTC would be in year 10000
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
EDGE_DATES = ["0001-01-01", "9999-12-31"]  # the review filters take whole days too


@dataclass(frozen=True)
class Variant:
    method: str
    path: str
    loc: list[str | int]  # where the 422 must point
    body: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    who: str = "admin"


@dataclass(frozen=True)
class Ids:
    site: int
    chair: int
    session: int


@pytest.fixture
def api(clinic: Clinic, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=clinic.url, data_dir=tmp_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _ids(api: TestClient, clinic: Clinic) -> Ids:
    site = api.get(f"/api/v1/sites/{clinic.site_id}", headers=clinic.auth("nurse")).json()
    chair = next(c for c in site["chairs"] if c["session"])
    return Ids(clinic.site_id, chair["id"], chair["session"]["id"])


def _query(path: str, name: str, value: object, who: str = "admin") -> Variant:
    return Variant("GET", path, ["query", name], params={name: value}, who=who)


def _id_variants(number: int, ids: Ids) -> list[Variant]:
    user = {"username": "bounds.user", "display_name": "B", "role": "nurse", "password": "x" * 16}
    binding = "/api/v1/devices/demo-monitor-01/binding"
    device = {"identifier": "bounds-device", "chair_id": number}
    credential = {"label": "bounds", "site_id": number}
    return [
        Variant("POST", "/api/v1/users", ["body", "site_ids", 0], {**user, "site_ids": [number]}),
        Variant("PATCH", "/api/v1/users/1", ["body", "site_ids", 0], {"site_ids": [number]}),
        Variant("POST", "/api/v1/devices", ["body", "chair_id"], device),
        Variant("PUT", binding, ["body", "chair_id"], {"chair_id": number}),
        Variant("POST", "/api/v1/device-credentials", ["body", "site_id"], credential),
        _query("/api/v1/review/sessions", "page", number),
        _query("/api/v1/review/sessions", "site_id", number),
        _query("/api/v1/review/sessions", "chair_id", number),
        _query("/api/v1/audit", "site_id", number),
        Variant("GET", f"/api/v1/sessions/{number}", ["path", "session_id"], who="nurse"),
        Variant("GET", f"/api/v1/sites/{number}", ["path", "site_id"], who="nurse"),
    ]  # fmt: skip


def _time_variants(moment: str, ids: Ids) -> list[Variant]:
    figures = f"/api/v1/review/sites/{ids.site}/figures"
    patient = {"pseudonym": "P-BOUNDS", "initials": "B.D."}
    return [
        _query("/api/v1/audit", "since", moment),
        _query("/api/v1/audit", "until", moment),
        _query("/api/v1/audit/export.csv", "since", moment),
        _query("/api/v1/review/sessions", "from", moment),
        _query("/api/v1/review/sessions", "to", moment),
        _query(figures, "from", moment),
        _query(figures, "to", moment),
        Variant(
            "POST", f"/api/v1/sessions/{ids.session}/events", ["body", "at"],
            {"kind": "note", "note": "bounds", "at": moment}, who="nurse",
        ),
        Variant(
            "POST", f"/api/v1/chairs/{ids.chair}/sessions", ["body", "at"],
            {"patient": patient, "at": moment}, who="nurse",
        ),
    ]  # fmt: skip


def _date_variants(day: str, ids: Ids) -> list[Variant]:
    return [
        _query("/api/v1/review/sessions", "from", day),
        _query("/api/v1/review/sessions", "to", day),
        _query(f"/api/v1/review/sites/{ids.site}/figures", "to", day),
    ]


def _problems(api: TestClient, clinic: Clinic, variants: list[Variant]) -> list[str]:
    wrong = []
    for variant in variants:
        response = api.request(
            variant.method,
            variant.path,
            json=variant.body,
            params=variant.params,
            headers=clinic.auth(variant.who),
        )
        where = f"{variant.method} {variant.path} {variant.params or variant.body}"
        if response.status_code != 422:
            wrong.append(f"{where}: {response.status_code} {response.text[:200]}")
        elif variant.loc not in [problem["loc"] for problem in response.json()["detail"]]:
            wrong.append(f"{where}: 422 without {variant.loc}: {response.text[:300]}")
    return wrong


def test_out_of_range_ids_are_refused_naming_the_field(api: TestClient, clinic: Clinic) -> None:
    ids = _ids(api, clinic)
    variants = [v for number in BIG_IDS for v in _id_variants(number, ids)]
    assert not _problems(api, clinic, variants)


def test_times_beyond_the_calendar_are_refused_naming_the_field(
    api: TestClient, clinic: Clinic
) -> None:
    ids = _ids(api, clinic)
    variants = [v for moment in EDGE_TIMES for v in _time_variants(moment, ids)]
    variants += [v for day in EDGE_DATES for v in _date_variants(day, ids)]
    assert not _problems(api, clinic, variants)


def test_a_device_time_beyond_the_calendar_is_refused_naming_the_field(
    api: TestClient, clinic: Clinic
) -> None:
    for moment in EDGE_TIMES:
        batch = {
            "device_id": clinic.device(1),
            "observations": [
                {"vital": "hr", "value": 70, "unit": "/min", "device_time": "2026-01-01T00:00Z"},
                {"vital": "hr", "value": 71, "unit": "/min", "device_time": moment},
            ],
        }
        response = api.post("/api/v1/observations", json=batch, headers=clinic.device_auth)
        assert response.status_code == 422, (moment, response.text)
        locs = [problem["loc"] for problem in response.json()["detail"]]
        assert locs == [["body", "observations", 1, "device_time"]], (moment, locs)


def test_times_just_inside_the_bounds_are_accepted(api: TestClient, clinic: Clinic) -> None:
    """The margin refuses only what cannot be converted or widened, not old records."""
    ids = _ids(api, clinic)
    admin = clinic.auth("admin")
    for params in ({"since": "0002-01-01T00:00:00Z"}, {"until": "9998-12-31T23:59:59Z"}):
        assert api.get("/api/v1/audit", params=params, headers=admin).status_code == 200
    for params in ({"from": "0002-01-01"}, {"to": "9998-12-31"}):
        assert api.get("/api/v1/review/sessions", params=params, headers=admin).status_code == 200
    note = {"kind": "note", "note": "old paper record", "at": "1999-05-01T08:00:00+02:00"}
    recorded = api.post(
        f"/api/v1/sessions/{ids.session}/events", json=note, headers=clinic.auth("nurse")
    )
    assert recorded.status_code == 201, recorded.text
