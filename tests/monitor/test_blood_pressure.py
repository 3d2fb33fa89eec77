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
from monitor.protocol import Phase
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
