"""Blood pressure with a real cuff: readings, republished values and confirmation.

A monitor takes one NIBP reading per cuff cycle (every 5 min in infusion) and many
republish that last reading with every update, about once a second, under the measurement
time of the cuff cycle. Vigil counts a reading once, by its measurement time, and confirms a
high SBP with the next scheduled reading (interval + margin) or an explicit repeat.
"""

from __future__ import annotations

from typing import Any

import pytest
from monitor_testkit import KEY, Chair, EvaluatorKind

from monitor.lifecycle import TransitionEvent
from monitor.protocol import Phase, Priority
from monitor.vitals import Vital

RAISED = TransitionEvent.RAISED
CLEARED = TransitionEvent.CLEARED


@pytest.fixture(params=["vector", "reference"])
def kind(request: pytest.FixtureRequest) -> EvaluatorKind:
    kind: EvaluatorKind = request.param
    return kind


class CuffMonitor:
    """A bedside monitor at 1 Hz: HR, PR, SpO2, PI every second, and its last NIBP reading
    republished with every update under that reading's own measurement time."""

    def __init__(self, chair: Chair) -> None:
        self.chair = chair
        self.reading: tuple[float, float, float] | None = None  # sys, dia, measured at

    def cuff(self, sys: float, dia: float, t: float) -> None:
        """A cuff cycle completes at t."""
        self.reading = (sys, dia, t)

    def second(self, t: float) -> None:
        rows: list[tuple[Any, ...]] = [
            (KEY, Vital.HR, 80.0, t),
            (KEY, Vital.PR, 80.0, t),
            (KEY, Vital.SPO2, 97.0, t),
            (KEY, Vital.PI, 1.5, t),
        ]
        if self.reading is not None:
            sys, dia, measured = self.reading
            rows += [
                (KEY, Vital.NIBP_SYS, sys, t, 0, measured),
                (KEY, Vital.NIBP_DIA, dia, t, 0, measured),
                (KEY, Vital.NIBP_MEAN, (sys + 2 * dia) / 3, t, 0, measured),
            ]
        engine = self.chair.engine
        self.chair.take(engine.ingest(engine.batch(rows)))
        self.chair.tick(t)


def test_a_five_minute_cuff_at_sbp_185_alarms_high_on_the_second_reading(
    kind: EvaluatorKind,
) -> None:
    """Issue 14: a simulated session spent 21.9 min at SBP ≥ 180 with no high alarm, because
    a repeat had to come within 3 min and the cuff cycles every 5 min."""
    chair = Chair(kind)  # infusion: NIBP every 300 s by default
    monitor = CuffMonitor(chair)
    for t in range(0, 1800):
        if t % 300 == 0:
            monitor.cuff(185, 95, t)
        monitor.second(t)

    assert chair.times("sbp_high_medium") == [0]
    # Not at t=1: the republished reading is the same measurement, not a repeat.
    high = chair.record("sbp_high_high", RAISED)
    assert (high.time, high.priority, high.value) == (300, Priority.HIGH, 185)
    assert high.text == "SBP 185 ≥ 180: consider pausing infusion"
    assert chair.times("sbp_high_high") == [300]  # one alarm, still active
    assert chair.times("sbp_high_crisis") == []
    assert chair.times("infusion_safety") == [300]  # one high condition
    assert chair.times("nibp_stale") == []


def test_a_republished_reading_confirms_nothing_and_keeps_nothing_fresh(
    kind: EvaluatorKind,
) -> None:
    """One cuff reading at 185, then the cuff stops (a failed schedule) while the monitor
    keeps republishing that reading every second."""
    chair = Chair(kind)
    monitor = CuffMonitor(chair)
    monitor.cuff(185, 95, 0)
    for t in range(0, 600):
        monitor.second(t)
    assert chair.times("sbp_high_high") == []
    # No new reading for the 5-min interval + 2 min: stale, republished values or not.
    assert chair.times("nibp_stale") == [420]


def test_the_next_reading_confirms_within_the_interval_plus_the_margin(
    kind: EvaluatorKind,
) -> None:
    chair = Chair(kind)  # interval 300 s + margin 120 s: 420 s
    chair.nibp(0, 184, 90)
    chair.nibp(421, 186, 90)  # one second too late: a new first reading
    assert chair.times("sbp_high_high") == []
    chair.nibp(841, 183, 90)  # 420 s after the reading at 421: confirmed
    assert chair.times("sbp_high_high") == [841]


def test_a_reading_below_the_limit_breaks_the_pair(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 184, 90)
    chair.nibp(300, 175, 90)  # the next reading is below 180: not confirmed
    chair.nibp(600, 184, 90)  # a new first reading
    assert chair.times("sbp_high_high") == []
    chair.nibp(660, 181, 90)  # an explicit repeat a minute later confirms
    assert chair.times("sbp_high_high") == [660]


@pytest.mark.parametrize(
    ("phase", "interval", "confirmed_at", "too_late"),
    [
        (Phase.INFUSION, 600.0, 720, 721),  # the session's own setting: 10 min + 2 min
        (Phase.RECOVERY, None, 1020, 1021),  # the phase default: 15 min + 2 min
        (Phase.INFUSION, 60.0, 180, 181),  # 1 min + 2 min = the explicit repeat's 3 min
        (Phase.INFUSION, 0.0, 180, 181),  # no schedule: the explicit repeat only
    ],
)
def test_the_confirmation_window_follows_the_sessions_cuff_interval(
    kind: EvaluatorKind,
    phase: Phase,
    interval: float | None,
    confirmed_at: float,
    too_late: float,
) -> None:
    for second, expected in ((confirmed_at, [confirmed_at]), (too_late, [])):
        chair = Chair(kind, phase=phase)
        chair.engine.set_nibp_interval(KEY, interval)
        chair.nibp(0, 185, 90)
        chair.nibp(second, 185, 90)
        assert chair.times("sbp_high_high") == expected, (second, chair.events("sbp_high_high"))


def test_the_crisis_tier_needs_no_confirmation(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    monitor = CuffMonitor(chair)
    monitor.cuff(204, 100, 0)
    for t in range(0, 30):
        monitor.second(t)
    assert chair.times("sbp_high_crisis") == [0]
    assert chair.times("sbp_high_high") == []  # one reading, republished: no confirmation


def test_republished_readings_do_not_make_a_baseline(kind: EvaluatorKind) -> None:
    chair = Chair(kind, phase=Phase.BASELINE)
    monitor = CuffMonitor(chair)
    monitor.cuff(128, 80, 0)
    for t in range(0, 300):
        monitor.second(t)
    assert chair.engine.baseline(KEY, Vital.NIBP_SYS) is None  # one reading, not two
    monitor.cuff(132, 82, 300)
    monitor.second(300)
    assert chair.engine.baseline(KEY, Vital.NIBP_SYS) == 130


# --- duplicates of any vital ------------------------------------------------------------------


def test_a_measurement_time_counts_once_the_first_sample_wins(kind: EvaluatorKind) -> None:
    """Two SpO2 samples with one measurement time are one measurement: the first received
    counts, in one batch or in two."""
    for split in (False, True):
        chair = Chair(kind)
        chair.run(0, 10, spo2=97, hr=80, pr=80, pi=1.5)
        rows = [(KEY, Vital.SPO2, 97.0, 10.0), (KEY, Vital.SPO2, 84.0, 10.0)]
        batches = [rows[:1], rows[1:]] if split else [rows]
        for batch in batches:
            chair.take(chair.engine.ingest(chair.engine.batch(batch)))
        assert chair.times("spo2_desat") == []
        chair.send(11, spo2=84)  # a new measurement
        assert chair.times("spo2_desat") == [11]


def test_a_device_that_only_repeats_itself_is_silent(kind: EvaluatorKind) -> None:
    """A monitor whose clock stopped sends the same measurement every second: no new data,
    so the device-silent alarm comes 10 s after its last real sample."""
    chair = Chair(kind)
    chair.run(0, 20, spo2=97, hr=80, pr=80, pi=1.5)
    for t in range(20, 40):
        rows = [
            (KEY, vital, value, float(t), 0, 19.0)
            for vital, value in ((Vital.SPO2, 97.0), (Vital.HR, 80.0), (Vital.PI, 1.5))
        ]
        chair.take(chair.engine.ingest(chair.engine.batch(rows)))
        chair.tick(t)
    assert chair.times("device_silent") == [29]
