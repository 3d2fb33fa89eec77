"""SimulatedChair: determinism, wire format, simulated clock."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.ingest.schemas import ObservationBatchIn
from monitor.vitals import DEVICE_QUALITY_NAMES, VITALS, Vital, normalise
from simulators.chair import ChairTick, SimulatedChair
from simulators.scenarios import available_scenarios

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
Runner = Callable[[str, int], tuple[SimulatedChair, tuple[ChairTick, ...]]]


def bodies(scenario: str, seed: int, seconds: int = 1800) -> list[object]:
    chair = SimulatedChair(scenario, seed=seed, start=START, duration_s=seconds)
    return [tick.body for tick in chair]


def test_same_seed_gives_identical_output() -> None:
    assert bodies("steady+motion-artifact", 11) == bodies("steady+motion-artifact", 11)


def test_different_seeds_give_different_output() -> None:
    assert bodies("steady", 11) != bodies("steady", 12)


def test_adding_an_event_does_not_change_the_patient(run_scenario: Runner) -> None:
    plain, _ = run_scenario("steady", 2)
    with_probe_off, _ = run_scenario("probe-off", 2)
    assert plain.profile == with_probe_off.profile


def test_runs_much_faster_than_real_time() -> None:
    began = time.perf_counter()
    ticks = list(SimulatedChair("steady", seed=3, start=START, duration_s=3600))
    assert len(ticks) == 3600
    assert time.perf_counter() - began < 5  # an hour of chair in seconds: no sleeping


def test_ticks_are_one_simulated_second_apart() -> None:
    chair = SimulatedChair("steady", seed=4, start=START, duration_s=5)
    ticks = list(chair)
    assert [t.elapsed_s for t in ticks] == [0, 1, 2, 3, 4]
    assert [t.time for t in ticks] == [START + timedelta(seconds=s) for s in range(5)]
    assert list(chair) == []  # iteration carries on where it stopped: nothing left
    assert chair.step().elapsed_s == 5  # stepping past the end carries on


def test_start_must_carry_an_offset() -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        SimulatedChair("steady", seed=1, start=datetime(2025, 1, 1))


@pytest.mark.parametrize("name", available_scenarios())
def test_every_body_is_valid_wire_format(name: str, run_scenario: Runner) -> None:
    _, ticks = run_scenario(name, 1)
    for tick in ticks:
        body = tick.body
        if body is None:
            assert tick.silent or not tick.observations
            continue
        ObservationBatchIn.model_validate(body)  # Vigil's own ingest schema
        assert body["device_id"] == "sim-chair-01"
        for item in body["observations"]:
            vital = Vital(item["vital"])  # the canonical code, not an alias
            assert item["unit"] == VITALS[vital].unit  # the canonical unit, as Vigil stores it
            assert set(item.get("quality", [])) <= set(DEVICE_QUALITY_NAMES)
            assert item.get("quality", True)  # flags, or no key at all: never an empty list
            assert datetime.fromisoformat(item["device_time"]).utcoffset() is not None
            normalise(vital, item["value"], item["unit"])  # inside Vigil's plausible range
            if item["vital"] in ("spo2", "pr", "hr", "pi"):
                assert item["value"] > 0  # a missing value is not sent, never a 0
        pressures = {o["vital"]: o["value"] for o in body["observations"]}
        if "nibp_sys" in pressures:
            assert pressures["nibp_dia"] < pressures["nibp_mean"] < pressures["nibp_sys"]


@pytest.mark.parametrize("seed", [1, 2])
def test_resting_readings_scatter_with_sd_4_to_6_and_hr_wanders_2_to_3(
    seed: int, tmp_path: Path
) -> None:
    scenario = tmp_path / "resting.toml"
    scenario.write_text("duration_min = 300\n[monitor]\nnibp_interval_min = 3\n")
    ticks = list(SimulatedChair(str(scenario), seed=seed, start=START))
    systolic = [v for t in ticks for v in t.values("nibp_sys")]
    heart_rate = [v for t in ticks for v in t.values("hr")]
    assert len(systolic) >= 90
    assert 3.5 <= statistics.stdev(systolic) <= 6.5
    assert 1.5 <= statistics.stdev(heart_rate) <= 3.5
