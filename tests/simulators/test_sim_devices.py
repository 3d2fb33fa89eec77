"""Device models on their own: NIBP cuff, pulse oximeter, clocks."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from simulators.devices import (
    ABORT_S,
    DeviceClock,
    FailureWindow,
    MotionBurst,
    NibpCuff,
    PulseOximeter,
    Reading,
)
from simulators.patient import TrueVitals


def vitals(hr: float = 72, sbp: float = 125, spo2: float = 97, pi: float = 1.4) -> TrueVitals:
    return TrueVitals(0.0, hr, sbp, 78, spo2, pi, 0.0, 0.0, 0.0)


def run_cuff(cuff: NibpCuff, seconds: int, hr: float = 72) -> dict[int, list[str]]:
    log: dict[int, list[str]] = {}
    for now in range(seconds):
        result = cuff.tick(now, vitals(hr=hr), None)
        if result.events:
            log[now] = result.events
        assert bool(result.readings) == ("nibp_reading" in result.events)
    return log


def cycles(log: dict[int, list[str]]) -> list[tuple[int, int, str]]:
    """(start, end, outcome) of each cycle in a cuff log."""
    out, start = [], None
    for now, events in sorted(log.items()):
        for event in events:
            if event == "nibp_cycle_start":
                start = now
            elif start is not None:
                out.append((start, now, event))
                start = None
    return out


def test_auto_cycles_take_25_to_40_s_and_report_only_at_the_end() -> None:
    cuff = NibpCuff(random.Random(1), interval_s=300, first_s=30, failure_rate=0.0)
    found = cycles(run_cuff(cuff, 3600))
    assert [start for start, _, _ in found] == list(range(30, 3600, 300))
    assert all(
        25 <= end - start <= 40 and outcome == "nibp_reading" for start, end, outcome in found
    )


def test_reading_is_a_plausible_triple() -> None:
    cuff = NibpCuff(random.Random(2), interval_s=60, first_s=0, failure_rate=0.0)
    readings: list[Reading] = []
    for now in range(600):
        readings += cuff.tick(now, vitals(sbp=140), None).readings
    systolic = [r.value for r in readings if r.vital == "nibp_sys"]
    diastolic = [r.value for r in readings if r.vital == "nibp_dia"]
    mean = [r.value for r in readings if r.vital == "nibp_mean"]
    assert len(systolic) == len(diastolic) == len(mean) == 10
    assert all(d < m < s for s, d, m in zip(systolic, diastolic, mean, strict=True))
    assert all(v == int(v) for v in systolic)  # whole mmHg, like a device


def test_stat_runs_back_to_back_cycles_for_five_minutes() -> None:
    cuff = NibpCuff(random.Random(3), interval_s=None, first_s=0, failure_rate=0.0)
    cuff.stat(0)
    found = cycles(run_cuff(cuff, 900))
    assert len(found) >= 7  # 300 s of 25-40 s cycles
    assert all(start < 300 for start, _, _ in found)
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(found)]
    assert all(gap <= 3 for gap in gaps)


def test_failures_are_3_to_5_percent_of_cycles() -> None:
    cuff = NibpCuff(random.Random(4), interval_s=60, first_s=0, failure_rate=0.04)
    outcomes = [outcome for _, _, outcome in cycles(run_cuff(cuff, 60 * 1500))]
    assert len(outcomes) > 1400
    assert 0.025 <= outcomes.count("nibp_failed") / len(outcomes) <= 0.06


def test_failure_window_fails_every_cycle_in_it() -> None:
    cuff = NibpCuff(random.Random(5), interval_s=60, first_s=0, failure_rate=0.0)
    cuff.add_failure_window(FailureWindow(600, 1200, 1.0))
    for start, _, outcome in cycles(run_cuff(cuff, 1800)):
        assert (outcome == "nibp_failed") == (600 <= start < 1200)


@pytest.mark.parametrize("hr", [35, 250])
def test_no_reading_when_heart_rate_is_below_40_or_above_240(hr: float) -> None:
    cuff = NibpCuff(random.Random(6), interval_s=600, first_s=0, failure_rate=0.0)
    found = cycles(run_cuff(cuff, 700, hr=hr))
    assert found[0] == (0, ABORT_S, "nibp_aborted")  # the device tries until its abort


def test_oximeter_averages_and_reports_every_second_after_acquiring() -> None:
    oxi = PulseOximeter(random.Random(7), averaging_s=8)
    shown = []
    for now in range(60):
        spo2 = 97 if now < 30 else 89  # a step: the 8 s average follows over 8 s
        readings = oxi.tick(now, vitals(spo2=spo2), True, None, None)
        shown.append(next((r.value for r in readings if r.vital == "spo2"), None))
    assert shown[:4] == [None] * 4
    assert all(v is not None for v in shown[8:])
    assert (shown[29], shown[40]) == (97, 89)
    assert 89 < (shown[33] or 0) < 97


def test_probe_off_holds_the_last_value_about_10_s_then_sends_nothing() -> None:
    oxi = PulseOximeter(random.Random(8), hold_s=10)
    out: dict[int, list[Reading]] = {}
    for now in range(120):
        out[now] = oxi.tick(now, vitals(), not 30 <= now < 80, None, None)
    held = [out[now] for now in range(30, 40)]
    assert all(r and all(x.quality == ("probe_off",) for x in r) for r in held)
    assert held[0][0].value == out[29][0].value
    assert all(out[now] == [] for now in range(40, 80))  # no value, never a 0
    assert any(out[now] for now in range(80, 90))  # back after re-acquiring


def test_motion_burst_reads_falsely_low_and_is_flagged_once_noticed() -> None:
    oxi = PulseOximeter(random.Random(9))
    burst = MotionBurst(start_s=30, end_s=60, spo2_drop=10, flagged=True)
    out = {
        now: oxi.tick(now, vitals(spo2=97), True, None, burst if 30 <= now < 60 else None)
        for now in range(70)
    }
    spo2 = {now: next(r for r in rs if r.vital == "spo2") for now, rs in out.items() if rs}
    assert min(spo2[now].value for now in range(38, 60)) <= 94
    assert spo2[31].quality == ()
    assert "artifact" in spo2[40].quality


def test_low_perfusion_is_flagged_at_or_below_0_4() -> None:
    oxi = PulseOximeter(random.Random(10))
    last: list[Reading] = []
    for now in range(20):
        last = oxi.tick(now, vitals(pi=0.3), True, None, None)
    assert last
    assert all("low_perfusion" in r.quality for r in last)


def test_cuff_on_the_oximeter_arm_flags_then_drops_spo2_for_the_cycle() -> None:
    oxi = PulseOximeter(random.Random(11))
    out = {}
    for now in range(100):
        cuff_s = now - 40 if 40 <= now < 75 else None
        out[now] = oxi.tick(now, vitals(), True, cuff_s, None)
    assert all("cuff_inflating" in r.quality for now in range(40, 48) for r in out[now])
    assert all(out[now] == [] for now in range(48, 75))
    assert any(out[now] for now in range(75, 85))


def test_device_clock_offset_and_drift() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    clock = DeviceClock(start, offset_s=-60, drift_ppm=1000)
    assert clock.at(0) == start - timedelta(seconds=60)
    assert clock.at(3600) == start + timedelta(seconds=3600 - 60 + 3.6)
