"""docs/grafana/vigil.json, checked without a Grafana (none runs here): a dashboard Grafana
can import, whose every query reads metrics that GET /metrics exposes, and which the
picture script (scripts/grafana_picture.py) can evaluate over real scrapes."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from grafana_picture import DASHBOARD, Scrape, metric_names, panel_series, parse, parse_exposition
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.conftest import Clinic

TOKEN = "dashboard-check"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_the_dashboard_is_one_grafana_can_import() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"] == "Vigil"
    assert isinstance(board["schemaVersion"], int)
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        at = panel["gridPos"]
        assert at["x"] >= 0, panel["title"]
        assert at["x"] + at["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(at["x"], at["x"] + at["w"])
            for y in range(at["y"], at["y"] + at["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            parse(target["expr"])  # within what the picture script evaluates


def test_every_panel_covers_what_issue_19_asks_for() -> None:
    read = {
        name
        for panel in dashboard()["panels"]
        for target in panel["targets"]
        for name in metric_names(parse(target["expr"]))
    }
    for family in (
        "vigil_ingest_samples_total",  # ingest rate
        "vigil_ingest_messages_total",  # refusals
        "vigil_ingest_commit_seconds_bucket",  # commit latency p95
        "vigil_ingest_commit_group_batches_sum",
        "vigil_ingest_batches_waiting",
        "vigil_live_device_to_screen_seconds_bucket",  # device → screen p95
        "vigil_live_websocket_clients",
        "vigil_live_resyncs_total",
        "vigil_alarms_raised_total",  # by priority
        "vigil_alarm_tick_age_seconds",
        "vigil_adapter_state",  # link states
        "vigil_device_links",
        "vigil_database_up",
    ):
        assert family in read, f"no panel reads {family}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_query_names_exposed_metrics_and_evaluates_over_real_scrapes(
    clinic: Clinic, tmp_path: Path
) -> None:
    app = create_app(Settings(database_url=clinic.url, data_dir=tmp_path, metrics_token=TOKEN))
    scraper = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as client:
        first = client.get("/metrics", headers=scraper)
        started = time.monotonic()
        posted = client.post(
            "/api/v1/observations",
            json={
                "device_id": clinic.device(1),
                "observations": [
                    {
                        "vital": "hr",
                        "value": 72,
                        "unit": "/min",
                        "device_time": datetime.now(UTC).isoformat(),
                    }
                ],
            },
            headers=clinic.device_auth,
        )
        assert posted.status_code == 201
        time.sleep(0.2)
        second = client.get("/metrics", headers=scraper)
        elapsed = time.monotonic() - started
    scrapes = [
        Scrape(0.0, parse_exposition(first.text)),
        Scrape(elapsed, parse_exposition(second.text)),
    ]
    # Every family /metrics declares (one with no series now, as the adapters' when none is
    # configured, is still declared), and every series name.
    exposed = {family.name for family in text_string_to_metric_families(second.text)}
    exposed |= {name for name, _ in scrapes[1].samples}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            missing = metric_names(parse(target["expr"])) - exposed
            assert not missing, f"{panel['title']}: /metrics has no {missing}"
    by_title = {panel["title"]: panel for panel in dashboard()["panels"]}
    stored = panel_series(by_title["Samples stored per second, by door"], scrapes)
    assert stored["http"][-1][1] == pytest.approx(1 / elapsed)  # one sample, over the span
    assert stored["mqtt"][-1][1] == 0
    commits = panel_series(by_title["Ingest commit latency (p95)"], scrapes)
    assert 0 < commits["p95"][-1][1] < 5
    database = panel_series(by_title["Database"], scrapes)
    assert database["database"][-1][1] == 1
    tick = panel_series(by_title["Alarm tick age"], scrapes)
    assert not math.isnan(tick["tick age"][-1][1])
