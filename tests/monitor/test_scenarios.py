"""Clinical scenarios with hand-computed alarm times, run on both evaluators.

Each second t the chair sends its samples stamped t, then the engine ticks at t.
"""

from __future__ import annotations

from typing import TypedDict

import pytest
from monitor_testkit import KEY, Chair, EvaluatorKind

from monitor.conditions import SampleBatch
from monitor.engine import AlarmEngine
from monitor.lifecycle import AlarmState, TransitionEvent
from monitor.protocol import AlarmKind, Phase, Priority
from monitor.vitals import SampleQuality, Vital

RAISED = TransitionEvent.RAISED
CLEARED = TransitionEvent.CLEARED
ENDED = TransitionEvent.CONDITION_ENDED


class Vitals(TypedDict):
    hr: float
    pr: float
    pi: float


NORMAL: Vitals = {"hr": 72, "pr": 72, "pi": 1.5}


@pytest.fixture(params=["vector", "reference"])
def kind(request: pytest.FixtureRequest) -> EvaluatorKind:
    kind: EvaluatorKind = request.param
    return kind


# --- desaturation -----------------------------------------------------------------------------


def test_desaturation_raises_after_the_condition_delay(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.run(0, 100, spo2=97, **NORMAL)
    chair.run(100, 170, spo2=88, **NORMAL)  # SpO2 drops to 88 at t=100

    assert chair.times("spo2_low_medium") == [115]  # ≤ 93 for 15 s
    assert chair.times("spo2_low_high") == [115]  # ≤ 90 for 15 s
    assert chair.times("spo2_low_sustained") == [160]  # ≤ 90 for 60 s
    assert chair.times("spo2_desat") == []  # 88 is above the zero-delay limit of 85
    high = chair.record("spo2_low_high", RAISED)
    assert (high.text, high.value, high.limit) == ("SpO2 88 ≤ 90", 88, 90)
    assert (high.priority, high.kind, high.session_key) == (
        Priority.HIGH,
        AlarmKind.PHYSIOLOGICAL,
        KEY,
    )
    assert chair.record("spo2_low_sustained", RAISED).priority is Priority.CRISIS
    combo = chair.record("infusion_safety", RAISED)  # one high condition escalates
    assert (combo.time, combo.priority) == (115, Priority.HIGH)
    assert combo.text == "Consider pausing the infusion: SpO2 88 ≤ 90"


def test_desaturation_recovery_uses_hysteresis_and_latching(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.run(0, 100, spo2=97, **NORMAL)
    chair.run(100, 120, spo2=88, **NORMAL)
    chair.run(120, 130, spo2=91, **NORMAL)  # ≤ 91: still inside the 1-point hysteresis
    assert chair.events("spo2_low_high") == [("raised", 115)]
    chair.run(130, 140, spo2=92, **NORMAL)  # past 90 + 1: the ≤ 90 conditions end
    chair.run(140, 150, spo2=95, **NORMAL)  # past 93 + 1: the ≤ 93 condition ends

    # High priority latches until acknowledged; medium clears on its own.
    assert chair.events("spo2_low_high") == [("raised", 115), ("condition_ended", 130)]
    assert chair.events("spo2_low_medium") == [("raised", 115), ("cleared", 140)]
    assert chair.events("infusion_safety") == [("raised", 115), ("condition_ended", 130)]
    latched = {a.rule_id: a for a in chair.engine.active_alarms(KEY)}
    assert latched["spo2_low_high"].state is AlarmState.RAISED
    assert not latched["spo2_low_high"].condition_active

    alarm_id = latched["spo2_low_high"].alarm_id
    done = chair.take(chair.engine.acknowledge(alarm_id, actor="rn.lee", time=200))
    assert [(r.event, r.actor, r.time) for r in done] == [
        (TransitionEvent.ACKNOWLEDGED, "rn.lee", 200),
        (CLEARED, "rn.lee", 200),
    ]


def test_desat_below_85_alarms_at_once(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.run(0, 50, spo2=97, **NORMAL)
    chair.second(50, spo2=84, **NORMAL)
    desat = chair.record("spo2_desat", RAISED)
    assert (desat.time, desat.priority, desat.text) == (50, Priority.CRISIS, "SpO2 84 ≤ 85")


# --- hypertensive response ----------------------------------------------------------------------


def test_hypertensive_response_with_baseline_and_confirmed_high(kind: EvaluatorKind) -> None:
    chair = Chair(kind, phase=Phase.BASELINE)
    chair.nibp(0, 128, 80)
    assert chair.engine.baseline(KEY, Vital.NIBP_SYS) is None  # one reading is not a baseline
    chair.nibp(300, 132, 82)
    assert chair.engine.baseline(KEY, Vital.NIBP_SYS) == 130  # mean of the two readings
    chair.set_phase(Phase.INFUSION, 400)

    chair.nibp(700, 158, 90)  # below 160 and below baseline + 30
    assert chair.raised_rules() == set()
    chair.nibp(1000, 165, 95)
    assert chair.times("sbp_high_medium") == [1000]
    rise = chair.record("sbp_rise_medium", RAISED)
    assert (rise.time, rise.text, rise.limit) == (1000, "SBP 165 ≥ 160 (baseline 130 + 30)", 160)

    chair.nibp(1300, 184, 104)  # ≥ 180 once: waits for a repeat reading
    assert chair.times("sbp_high_high") == []
    assert chair.times("dbp_high_medium") == [1300]
    chair.nibp(1420, 186, 106)  # the repeat, 2 min later, confirms
    high = chair.record("sbp_high_high", RAISED)
    assert (high.time, high.priority) == (1420, Priority.HIGH)
    assert high.text == "SBP 186 ≥ 180: consider pausing infusion"
    assert chair.times("infusion_safety") == [1420]

    chair.nibp(1500, 205, 112)  # extreme: no confirmation needed
    assert chair.times("sbp_high_crisis") == [1500]
    assert chair.times("dbp_high_high") == [1500]


def test_without_a_cuff_schedule_high_bp_needs_a_repeat_within_three_minutes(
    kind: EvaluatorKind,
) -> None:
    """At check-in the cuff has no schedule (interval 0): only an explicit repeat confirms.
    (With a schedule the next scheduled reading confirms too: test_blood_pressure.py.)"""
    chair = Chair(kind, phase=Phase.CHECKED_IN)
    chair.nibp(0, 184, 90)
    chair.nibp(300, 185, 90)  # 5 min later: too late to confirm; a new first reading
    assert chair.times("sbp_high_high") == []
    chair.nibp(360, 170, 90)  # a repeat below the limit: not confirmed
    chair.nibp(420, 184, 90)
    assert chair.times("sbp_high_high") == []
    chair.nibp(600, 183, 90)  # 180 s after the first: confirmed (at most 180 s apart)
    assert chair.times("sbp_high_high") == [600]


def test_bp_rules_evaluate_readings_not_ticks(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 165, 90)
    assert chair.times("sbp_high_medium") == [0]
    for t in range(1, 600, 5):
        chair.second(t, spo2=97, **NORMAL)  # time passes, no NIBP reading: nothing changes
    chair.nibp(600, 157, 90)  # above 160 - 5 hysteresis: still active
    chair.nibp(900, 150, 88)
    # Unacknowledged, the medium alarm went up to high after 5 min (first tick at or after
    # 300 s), then to crisis 2 min later; as a high-priority alarm it latches.
    assert chair.events("sbp_high_medium") == [
        ("raised", 0),
        ("escalated", 301),
        ("escalated", 421),
        ("condition_ended", 900),
    ]


def test_baseline_relative_rule_waits_for_a_baseline(kind: EvaluatorKind) -> None:
    chair = Chair(kind)  # infusion, but no baseline phase was recorded
    chair.nibp(0, 155, 90)
    assert chair.raised_rules() == set()
    chair.engine.set_baseline(KEY, Vital.NIBP_SYS, 120)
    chair.nibp(300, 155, 90)
    assert chair.times("sbp_rise_medium") == [300]
    assert chair.times("sbp_high_medium") == []


# --- probe off, disconnect, cuff, perfusion -------------------------------------------------


def test_probe_off_is_one_technical_alarm(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 50, spo2=97, **NORMAL)
    for t in range(50, 60):  # the oximeter holds its last values, flagged, for 10 s ...
        chair.send(t, quality=SampleQuality.PROBE_OFF, spo2=97, pr=72, pi=1.5)
        chair.second(t, hr=72)
    for t in range(60, 120):  # ... then sends nothing; the ECG goes on
        chair.second(t, hr=72)
    chair.run(120, 130, spo2=97, **NORMAL)  # probe back on

    probe = chair.record("spo2_probe_off", RAISED)
    assert (probe.time, probe.kind, probe.text) == (50, AlarmKind.TECHNICAL, "SpO2 probe off")
    assert chair.times("spo2_probe_off", CLEARED) == [120]
    # The missing SpO2 is explained by the probe-off alarm: no second alarm for it.
    assert chair.raised_rules() == {"spo2_probe_off"}


def test_spo2_silence_without_a_reason_raises_no_value(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 50, spo2=97, **NORMAL)
    for t in range(50, 120):
        chair.second(t, hr=72)  # SpO2, PR and PI stop without any flag
    chair.run(120, 125, spo2=97, **NORMAL)
    no_value = chair.record("spo2_no_value", RAISED)
    assert (no_value.time, no_value.text) == (59, "SpO2 no value for 10 s")  # last at 49
    assert chair.times("spo2_no_value", CLEARED) == [120]


def test_device_disconnect(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 101, spo2=97, **NORMAL)  # last samples at t=100
    for t in range(101, 130):
        chair.tick(t)
    chair.run(130, 135, spo2=97, **NORMAL)

    silent = chair.record("device_silent", RAISED)
    assert (silent.time, silent.priority) == (110, Priority.MEDIUM)
    assert silent.text == "Monitor silent: no data for 10 s"
    assert chair.times("device_silent", CLEARED) == [130]
    assert chair.raised_rules() == {"device_silent"}  # SpO2 no-value is suppressed


def test_cuff_on_the_spo2_arm_holds_spo2_alarms(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 300, spo2=97, **NORMAL)
    for t in range(300, 308):  # cuff inflating: flagged, meaningless values
        chair.send(t, quality=SampleQuality.CUFF_INFLATING, spo2=80, pr=150, pi=0.2)
        chair.second(t, hr=72)
    for t in range(308, 341):  # occluded: the oximeter sends nothing until it reacquires
        if t == 335:
            chair.nibp(t, 125, 80)
        chair.second(t, hr=72)
    chair.run(341, 360, spo2=97, **NORMAL)
    assert chair.raised_rules() == set()


def test_cuff_hold_has_a_limit(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 300, spo2=97, **NORMAL)
    for t in range(300, 308):
        chair.send(t, quality=SampleQuality.CUFF_INFLATING, spo2=97, pr=72, pi=1.5)
        chair.second(t, hr=72)
    for t in range(308, 400):  # the oximeter never comes back
        chair.second(t, hr=72)
    # The last flagged sample (307) explains the absence for cuff_hold_s = 60 s, then the
    # usual 10 s window runs: 307 + 60 + 10.
    assert chair.times("spo2_no_value") == [377]


def test_low_perfusion_gates_spo2(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 20, spo2=97, hr=72, pr=72, pi=1.5)
    chair.run(20, 50, spo2=84, hr=72, pr=72, pi=0.3)  # unreliable: would be a desat
    chair.run(50, 60, spo2=84, hr=72, pr=72, pi=0.45)  # within the 0.1 hysteresis
    assert chair.times("spo2_desat") == []
    chair.run(60, 65, spo2=84, hr=72, pr=72, pi=0.6)  # reliable again, and still 84

    low = chair.record("spo2_low_signal", RAISED)
    assert (low.time, low.priority, low.kind) == (20, Priority.LOW, AlarmKind.TECHNICAL)
    assert low.text == "Low signal quality (PI 0.3 ≤ 0.4): SpO2 and pulse rate held"
    assert chair.times("spo2_low_signal", CLEARED) == [60]
    assert chair.times("spo2_desat") == [60]  # the PI sample at 60 is applied first
    assert "spo2_no_value" not in chair.raised_rules()


# --- missing data is never normal -------------------------------------------------------------


def test_missing_data_neither_resets_nor_raises(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 100, spo2=97, **NORMAL)
    chair.run(100, 106, spo2=88, **NORMAL)  # condition starts at 100
    for t in range(106, 126):  # motion: flagged samples, falsely normal
        chair.send(t, quality=SampleQuality.ARTIFACT, spo2=97)
        chair.second(t, **NORMAL)
    assert chair.times("spo2_low_high") == []  # no usable sample said so: no raise
    assert chair.times("spo2_no_value") == [115]  # the gap itself is announced
    chair.second(126, spo2=88, **NORMAL)
    # The artifact did not reset the onset: 126 - 100 ≥ 15, raised on the first usable sample.
    assert chair.times("spo2_low_high") == [126]
    assert chair.times("spo2_no_value", CLEARED) == [126]

    for t in range(127, 140):  # flagged normal values do not clear the alarm either
        chair.send(t, quality=SampleQuality.ARTIFACT, spo2=97)
        chair.second(t, **NORMAL)
    assert chair.times("spo2_low_high", ENDED) == []
    chair.second(140, spo2=97, **NORMAL)
    assert chair.times("spo2_low_high", ENDED) == [140]


def test_heart_rate_delay_restarts_when_the_value_recovers(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 10, spo2=97, **NORMAL)
    chair.run(10, 15, spo2=97, hr=115, pr=72, pi=1.5)
    chair.second(15, spo2=97, hr=100, pr=72, pi=1.5)  # one normal sample resets the onset
    chair.run(16, 40, spo2=97, hr=115, pr=72, pi=1.5)
    hr = chair.record("hr_high_medium", RAISED)
    assert (hr.time, hr.text) == (26, "HR 115 > 110")  # 16 + 10 s delay
    assert chair.times("pr_high_medium") == []


# --- NIBP technical alarms ----------------------------------------------------------------------


def test_two_failed_cuff_cycles_in_a_row(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.take(chair.engine.report_nibp_failure(KEY, 100))
    assert chair.times("nibp_failed") == []
    chair.take(chair.engine.report_nibp_failure(KEY, 400))
    failed = chair.record("nibp_failed", RAISED)
    assert (failed.time, failed.text) == (400, "NIBP failed 2 times in a row")
    chair.nibp(700, 120, 80)
    assert chair.times("nibp_failed", CLEARED) == [700]


@pytest.mark.parametrize(
    ("phase", "interval", "expected"),
    [
        (Phase.INFUSION, None, 420),  # 5 min + 2 min
        (Phase.RECOVERY, None, 1020),  # 15 min + 2 min
        (Phase.INFUSION, 600.0, 720),  # the session's own setting
    ],
)
def test_nibp_stale_after_interval_plus_grace(
    kind: EvaluatorKind, phase: Phase, interval: float | None, expected: float
) -> None:
    chair = Chair(kind, phase=phase)
    chair.engine.set_nibp_interval(KEY, interval)
    chair.nibp(0, 120, 80)
    for t in range(0, 1200, 5):
        chair.second(t, spo2=97, **NORMAL)
    stale = chair.record("nibp_stale", RAISED)
    assert stale.time == expected
    assert stale.text == f"NIBP stale: no valid reading for {expected // 60:g} min"


# --- phases ---------------------------------------------------------------------------------


def test_technical_alarms_wait_for_their_phase(kind: EvaluatorKind) -> None:
    chair = Chair(kind, phase=Phase.CHECKED_IN)
    for t in range(0, 60):
        chair.tick(t)  # no monitor attached yet, and that is fine at check-in
    assert chair.raised_rules() == set()
    chair.set_phase(Phase.BASELINE, 60)
    for t in range(60, 80):
        chair.tick(t)
    assert chair.times("device_silent") == [70]  # the clock starts with the phase


def test_discharge_ends_conditions_of_rules_that_no_longer_apply(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 120, 80)
    chair.run(0, 20, spo2=97, hr=120, pr=72, pi=1.5)
    assert chair.times("hr_high_medium") == [10]
    chair.set_phase(Phase.DISCHARGED, 30)
    assert chair.times("hr_high_medium", CLEARED) == [30]


def test_combination_counts_groups_not_rules(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    chair.nibp(0, 165, 105)  # SBP ≥ 160 and DBP ≥ 100: two mediums, one group
    chair.run(0, 20, spo2=97, hr=115, pr=115, pi=1.5)  # HR and PR > 110: one group
    assert chair.times("hr_high_medium") == [10]
    combo = chair.record("infusion_safety", RAISED)  # blood pressure + heart rate
    assert combo.time == 10
    assert combo.text == "Consider pausing the infusion: HR 115 > 110; SBP 165 ≥ 160"


def test_combination_only_during_infusion(kind: EvaluatorKind) -> None:
    chair = Chair(kind, phase=Phase.RECOVERY)
    chair.nibp(0, 165, 90)
    chair.run(0, 20, spo2=97, hr=115, pr=72, pi=1.5)
    assert chair.times("hr_high_medium") == [10]
    assert chair.times("infusion_safety") == []
    chair.set_phase(Phase.INFUSION, 30)
    assert chair.times("infusion_safety") == [30]


def test_override_moves_a_limit_for_one_session(kind: EvaluatorKind) -> None:
    chair = Chair(kind)
    other = "chair-2"
    chair.engine.add_session(other, Phase.INFUSION, 0)
    record = chair.engine.override_limit(
        KEY, "sbp_high_medium", 170, who="dr.ng", why="known hypertension", time=5
    )
    assert (record.old, record.new, record.who, record.time) == (160, 170, "dr.ng", 5)
    chair.nibp(10, 165, 90)
    rows = [(other, v, x, 10.0) for v, x in ((Vital.NIBP_SYS, 165), (Vital.NIBP_DIA, 90))]
    chair.take(chair.engine.ingest(chair.engine.batch(rows)))
    raised = [(r.session_key, r.rule_id) for r in chair.log if r.event is RAISED]
    assert raised == [(other, "sbp_high_medium")]
    chair.nibp(20, 171, 90)
    mine = [r for r in chair.log if r.session_key == KEY and r.event is RAISED]
    assert [(r.time, r.text) for r in mine] == [(20, "SBP 171 ≥ 170")]
    assert chair.engine.overrides(KEY) == [record]
    assert chair.engine.overrides(other) == []


# --- engine API edges ---------------------------------------------------------------------


def test_a_backlog_in_one_batch_gives_the_same_times(kind: EvaluatorKind) -> None:
    """A gateway reconnects and sends 40 s of samples at once, out of order."""
    chair = Chair(kind)
    rows = []
    for t in range(40):
        spo2 = 97 if t < 10 else 88
        rows += [(KEY, Vital.SPO2, spo2, float(t)), (KEY, Vital.PI, 1.5, float(t))]
    rows.reverse()
    chair.take(chair.engine.ingest(chair.engine.batch(rows)))
    assert chair.times("spo2_low_high") == [25]  # 10 + 15, stamped with the sample's time
    assert chair.times("spo2_low_medium") == [25]


def test_samples_of_unknown_or_ended_sessions_are_ignored(kind: EvaluatorKind) -> None:
    engine = AlarmEngine(evaluator=kind)
    first = engine.add_session("a", Phase.INFUSION, 0)
    engine.add_session("b", Phase.INFUSION, 0)
    engine.remove_session("a", 1)
    batch = SampleBatch.from_rows([(first, Vital.SPO2, 70, 2.0), (99, Vital.SPO2, 70, 2.0)])
    assert engine.ingest(batch) == []
    assert engine.add_session("c", Phase.INFUSION, 3) == first  # the index is reused
    with pytest.raises(KeyError):
        engine.session_index("a")


def test_batches_are_validated() -> None:
    with pytest.raises(ValueError, match="same length"):
        SampleBatch.from_arrays([0, 1], [2], [97.0], [1.0])
    with pytest.raises(ValueError, match="vital index"):
        SampleBatch.from_arrays([0], [7], [97.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        SampleBatch.from_arrays([0], [2], [97.0], [float("nan")])
    engine = AlarmEngine()
    engine.add_session("a", Phase.INFUSION, 0)
    with pytest.raises(ValueError, match="already"):
        engine.add_session("a", Phase.INFUSION, 0)
    with pytest.raises(ValueError, match="finite"):
        engine.set_baseline("a", Vital.NIBP_SYS, float("inf"))
