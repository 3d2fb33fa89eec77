"""`vigil scenarios` and `vigil simulate`, run as a tester runs them, against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from app.storage.models import Device, Sample
from simulators.chair import SimulatedChair
from simulators.scenarios import available_scenarios
from tests.conftest import Clinic, LiveServer, free_port
from tests.test_cli import env_with, run

Stored = list[tuple[datetime, str, float]]


def stored_by_device(clinic: Clinic) -> tuple[dict[str, Stored], list[tuple[datetime, datetime]]]:
    """Each device's (device_time, vital, value) in time order, and every (device, received)."""
    engine = create_engine(clinic.url)
    query = (
        select(
            Device.identifier, Sample.device_time, Sample.vital, Sample.value, Sample.received_time
        )
        .join(Device, Device.id == Sample.device_id)
        .order_by(Sample.device_time, Sample.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    engine.dispose()
    out: dict[str, Stored] = {}
    for device, device_time, vital, value, _ in rows:
        out.setdefault(device, []).append((device_time, vital, value))
    return out, [(row.device_time, row.received_time) for row in rows]


def test_scenarios_lists_each_one_and_shows_a_timeline() -> None:
    listing = run("scenarios")
    assert listing.returncode == 0, listing.stderr
    for name in available_scenarios():
        assert name in listing.stdout
    assert "100 min" in listing.stdout

    detail = run("scenarios", "hypertensive-responder")
    assert detail.returncode == 0, detail.stderr
    assert "infusion start" in detail.stdout
    assert "sensitivity_multiplier [3.5, 4.5]" in detail.stdout


def test_an_unknown_scenario_stops_before_sending_and_names_the_known_ones() -> None:
    # No server at this address: the scenario is checked first.
    result = run("simulate", "--scenario", "hypertensive", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "unknown scenario 'hypertensive'" in result.stderr
    assert "hypertensive-responder" in result.stderr


def test_a_malformed_scenario_file_is_named_with_its_line_and_key(tmp_path: Path) -> None:
    scenario = tmp_path / "mine.toml"
    scenario.write_text('include = ["steady"]\n\n[patient]\nbaseline_sbp = 500\n')
    result = run("simulate", "--scenario", str(scenario), "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert f"{scenario}, line 4, [patient] baseline_sbp: must be between 70 and 200" in (
        result.stderr
    )


def test_an_unreachable_server_is_said_plainly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run("simulate", "--chairs", "1", "--duration", "5", "--url", url, "--wait", "0")
    assert result.returncode == 1
    assert f"cannot reach Vigil at {url}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_fast_run_stores_what_the_seeded_chairs_produce_with_real_spacing(
    live_server: LiveServer, clinic: Clinic
) -> None:
    duration, speed, seed = 90, 30, 7
    started = datetime.now(UTC)
    result = run(
        "simulate",
        *("--chairs", "3", "--scenario", "steady", "--speed", str(speed)),
        *("--seed", str(seed), "--duration", str(duration), "--url", live_server.http_url),
        env=env_with(VIGIL_DEVICE_TOKEN=clinic.device_token),  # the site's gateway credential
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "01:30 / 01:30" in result.stdout  # the progress bar's last state
    stored, times = stored_by_device(clinic)
    assert sorted(stored) == [clinic.device(i) for i in (1, 2, 3)]

    for index in (1, 2, 3):
        # Determinism: chair k of --seed 7 is SimulatedChair(seed 7 + k − 1), value for value.
        chair = SimulatedChair("steady", seed + index - 1, started, duration_s=duration)
        expected = [
            (tick.device_time, o["vital"], o["value"])
            for tick in chair
            for o in (tick.body or {"observations": []})["observations"]
        ]
        got = stored[clinic.device(index)]
        assert [(v, x) for _, v, x in got] == [(v, x) for _, v, x in expected]
        # Device times keep the simulated spacing (90 s), not the wall clock's (3 s).
        offsets = [(t - got[0][0]).total_seconds() for t, _, _ in got]
        expected_offsets = [(t - expected[0][0]).total_seconds() for t, _, _ in expected]
        assert offsets == pytest.approx(expected_offsets, abs=0.002)

    # The run was placed in the past so that none of it is ahead of the server's clock
    # (beyond the simulated monitors' own clock error of up to 3 s).
    assert max((d - r).total_seconds() for d, r in times) < 4.0
    first_device_time = min(d for d, _ in times)
    assert first_device_time < started - timedelta(seconds=duration * (1 - 1 / speed) - 10)
