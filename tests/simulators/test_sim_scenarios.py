"""Every shipped scenario produces the signature it claims, over several seeds."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from datetime import datetime

import pytest

from simulators.chair import ChairTick, PlannedEvent, SimulatedChair
from simulators.scenarios import available_scenarios, load_scenario
from simulators.wire import VitalCode

SEEDS = [1, 2, 3]
Ticks = tuple[ChairTick, ...]
Runner = Callable[[str, int], tuple[SimulatedChair, Ticks]]


def values(ticks: Ticks, vital: VitalCode, lo: int = 0, hi: int | None = None) -> list[float]:
    """Values of `vital` sent (not silent) in seconds [lo, hi)."""
    return [v for t in ticks[lo:hi] for v in t.values(vital)]


def planned(chair: SimulatedChair, kind: str) -> list[PlannedEvent]:
    return [event for event in chair.timeline if event.kind == kind]


def annotated(ticks: Ticks, label: str) -> list[int]:
    return [t.elapsed_s for t in ticks if label in t.annotations]


def test_the_brief_scenarios_are_all_shipped() -> None:
    assert {
        "steady",
        "hypertensive-responder",
        "vasovagal",
        "transient-desaturation",
        "probe-off",
        "motion-artifact",
        "cuff-on-spo2-arm",
        "nibp-failures",
        "device-disconnect",
        "clock-drift",
    } <= set(available_scenarios())


@pytest.mark.parametrize("name", available_scenarios())
def test_every_scenario_loads_and_runs_a_whole_session(name: str, run_scenario: Runner) -> None:
    chair, ticks = run_scenario(name, 1)
    assert len(ticks) == chair.duration_s == 100 * 60
    assert len(annotated(ticks, "infusion_start")) == 1  # the steady base, counted once


@pytest.mark.parametrize("seed", SEEDS)
def test_steady_session_follows_the_protocol(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("steady", seed)
    assert annotated(ticks, "infusion_start") == [600]
    assert annotated(ticks, "infusion_complete") == [3000]  # 0.5 mg/kg over 40 min
    starts = annotated(ticks, "nibp_cycle_start")
    assert starts[:2] == [30, 330]  # two baseline readings 5 min apart
    assert all(b - a == 300 for a, b in itertools.pairwise(starts) if b <= 3000)
    assert all(b - a == 900 for a, b in itertools.pairwise(starts) if a >= 3030)
    assert max(values(ticks, "spo2")) <= 100
    assert min(values(ticks, "spo2")) >= 93
    truth_rise = ticks[3000].truth.sbp - chair.profile.baseline_sbp
    assert truth_rise > -15  # variability aside, the drug raises pressure


@pytest.mark.parametrize("seed", [*SEEDS, 4, 5])
def test_hypertensive_responder_systolic_passes_180(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("hypertensive-responder", seed)
    systolic = values(ticks, "nibp_sys")
    assert max(systolic) > 180
    assert max(systolic) <= 215
    assert max(systolic[:2]) < 160  # baseline before the drug is unremarkable
    assert 3.5 <= chair.profile.sensitivity <= 4.5


@pytest.mark.parametrize("seed", SEEDS)
def test_vasovagal_drops_heart_rate_and_perfusion(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("vasovagal", seed)
    (event,) = planned(chair, "vasovagal")
    start, drop = event.start_s, float(event.params["hr_drop"])
    before_hr = statistics.mean(values(ticks, "hr", start - 60, start))
    during_hr = values(ticks, "hr", start, start + 120)
    assert 15 <= drop <= 30
    assert min(during_hr) <= before_hr - 0.75 * drop
    before_pi = statistics.mean(values(ticks, "pi", start - 60, start))
    assert min(values(ticks, "pi", start + 20, start + 90)) <= 0.65 * before_pi
    # Recovered a few minutes after the recovery phase.
    later = event.start_s + 60 + 5 * 60 + 120
    assert statistics.mean(values(ticks, "hr", later, later + 60)) >= before_hr - 8


@pytest.mark.parametrize("seed", SEEDS)
def test_transient_desaturation_nadir_is_86_to_92(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("transient-desaturation", seed)
    (event,) = planned(chair, "desaturation")
    during = values(ticks, "spo2", event.start_s, event.start_s + 300)
    assert 86 <= min(during) <= 92
    assert min(values(ticks, "spo2", 0, event.start_s)) >= 93
    assert min(values(ticks, "spo2", event.start_s + 300)) >= 93


@pytest.mark.parametrize("seed", SEEDS)
def test_probe_off_sends_no_spo2_after_the_hold(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("probe-off", seed)
    (event,) = planned(chair, "probe_off")
    assert event.end_s is not None
    held = ticks[event.start_s : event.start_s + 10]
    assert all(
        o.get("quality") == ["probe_off"]
        for t in held
        for o in t.observations
        if o["vital"] == "spo2"
    )
    assert values(ticks, "spo2", event.start_s + 10, event.end_s) == []
    assert values(ticks, "pr", event.start_s + 10, event.end_s) == []
    assert len(values(ticks, "hr", event.start_s + 10, event.end_s)) > 0  # ECG carries on
    assert values(ticks, "spo2", event.end_s, event.end_s + 15)  # back once re-acquired


@pytest.mark.parametrize("seed", SEEDS)
def test_motion_artifact_reads_falsely_low(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("motion-artifact", seed)
    flagged, unflagged = planned(chair, "motion")
    for burst in (flagged, unflagged):
        assert burst.end_s is not None
        shown = [
            (o["value"], o.get("quality", []), t.truth.spo2)
            for t in ticks[burst.start_s : burst.end_s + 8]
            for o in t.observations
            if o["vital"] == "spo2"
        ]
        assert min(value - round(true) for value, _, true in shown) <= -3
        if burst is flagged and burst.end_s - burst.start_s > 5:
            assert any("artifact" in quality for _, quality, _ in shown)
        if burst is unflagged:
            assert not any(quality for _, quality, _ in shown)


@pytest.mark.parametrize("seed", SEEDS)
def test_cuff_on_spo2_arm_drops_spo2_during_cuff_cycles(seed: int, run_scenario: Runner) -> None:
    _, ticks = run_scenario("cuff-on-spo2-arm", seed)
    starts = annotated(ticks, "nibp_cycle_start")
    assert len(starts) >= 10
    for start in starts:
        # Eight seconds of inflation flagged, then nothing until the cuff lets go.
        assert values(ticks, "spo2", start + 8, start + 24) == []
        assert all(
            "cuff_inflating" in o.get("quality", [])
            for t in ticks[start : start + 8]
            for o in t.observations
            if o["vital"] == "spo2"
        )
    # The same patient with the cuff on the other arm keeps its SpO2 through the cycles.
    _, other_arm = run_scenario("steady", seed)
    for start in annotated(other_arm, "nibp_cycle_start"):
        assert len(values(other_arm, "spo2", start + 8, start + 24)) == 16


@pytest.mark.parametrize("seed", SEEDS)
def test_nibp_failures_leave_cycles_without_readings(seed: int, run_scenario: Runner) -> None:
    chair, ticks = run_scenario("nibp-failures", seed)
    (window,) = planned(chair, "nibp_failures")
    assert window.end_s is not None
    inside = [s for s in annotated(ticks, "nibp_cycle_start") if window.start_s <= s < window.end_s]
    failed = annotated(ticks, "nibp_failed")
    assert len(inside) >= 3
    assert len([f for f in failed if f > window.start_s]) >= len(inside)
    assert values(ticks, "nibp_sys", window.start_s, window.end_s) == []
    assert values(ticks, "nibp_sys", 0, window.start_s)
    assert values(ticks, "nibp_sys", window.end_s + 200)


@pytest.mark.parametrize("seed", SEEDS)
def test_device_disconnect_yields_silent_seconds_then_reconnects(
    seed: int, run_scenario: Runner
) -> None:
    chair, ticks = run_scenario("device-disconnect", seed)
    (event,) = planned(chair, "disconnect")
    assert event.end_s is not None
    silent = [t.elapsed_s for t in ticks if t.silent]
    assert silent == list(range(event.start_s, event.end_s))
    assert 60 <= len(silent) <= 180
    assert all(ticks[s].body is None for s in silent)
    assert ticks[event.end_s].body is not None
    assert ticks[event.start_s - 1].body is not None


@pytest.mark.parametrize("seed", SEEDS)
def test_clock_drift_moves_device_time_away_from_true_time(seed: int, run_scenario: Runner) -> None:
    _, ticks = run_scenario("clock-drift", seed)
    first = (ticks[0].device_time - ticks[0].time).total_seconds()
    last = (ticks[-1].device_time - ticks[-1].time).total_seconds()
    assert -150 <= first <= -60
    assert 3 <= last - first <= 12


def test_scenarios_compose_and_share_their_base(sim_start: datetime) -> None:
    both = load_scenario("vasovagal+probe-off")
    assert both.name == "vasovagal+probe-off"
    assert [e.kind for e in both.events].count("nibp_interval") == 1  # steady counted once
    assert {e.kind for e in both.events} >= {"vasovagal", "probe_off"}
    assert len(both.infusion) == 1
    ticks = tuple(SimulatedChair(both, seed=1, start=sim_start))
    assert annotated(ticks, "vasovagal")
    assert annotated(ticks, "probe_off")
    assert load_scenario("vasovagal") + load_scenario("probe-off") == both
