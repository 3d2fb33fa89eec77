"""The session workflow's clinical rules (issue 20): each rule at, just above and just below its
limits, property tests, and the protocol's `[workflow]` section with its errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from monitor.engine import AlarmEngine
from monitor.protocol import (
    DEFAULT_PROTOCOL_PATH,
    MEASURED_CRITERIA,
    AlarmKind,
    BloodPressurePair,
    Phase,
    Priority,
    Protocol,
    ProtocolError,
    ScoreKind,
    WorkflowSettings,
    default_protocol,
    parse_protocol,
)
from monitor.vitals import SampleQuality, Vital
from monitor.workflow import (
    Baseline,
    CriterionKind,
    PhaseChange,
    PreInfusion,
    ScoreRecord,
    ScoreState,
    VitalSample,
    baseline_from_readings,
    check_score,
    discharge_readiness,
    phase_at,
    pre_infusion_check,
    samples_in_phase,
    score_status,
    score_statuses,
    sedation_alarm,
)

DEFAULT = DEFAULT_PROTOCOL_PATH.read_text(encoding="utf-8")
PROTOCOL = default_protocol()
REPO = Path(__file__).resolve().parents[2]
WORKFLOW_START = DEFAULT.index("[workflow]")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SYS, DIA = Vital.NIBP_SYS, Vital.NIBP_DIA
TICKS = frozenset(PROTOCOL.workflow.discharge.ticked)


def with_workflow(old: str, new: str) -> Protocol:
    """The default protocol with one change inside its [workflow] section."""
    return parse_protocol(replace_in_workflow(old, new), source="clinic.toml")


def replace_in_workflow(old: str, new: str) -> str:
    section = DEFAULT[WORKFLOW_START:]
    assert old in section, old
    return DEFAULT[:WORKFLOW_START] + section.replace(old, new, 1)


def bp(time: float, sbp: float, dbp: float, quality: int = 0) -> list[VitalSample]:
    """One completed NIBP cycle: its SBP and DBP samples."""
    return [VitalSample(SYS, sbp, time, quality), VitalSample(DIA, dbp, time, quality)]


def baseline_of(*pairs: tuple[float, float]) -> list[VitalSample]:
    """Baseline readings 5 min apart."""
    return [s for i, (sbp, dbp) in enumerate(pairs) for s in bp(300.0 * i, sbp, dbp)]


# --- the defaults are the brief's ---------------------------------------------------------------


def test_default_workflow_matches_the_brief() -> None:
    w = PROTOCOL.workflow
    assert (w.advisory, w.override) == (BloodPressurePair(140, 90), BloodPressurePair(160, 100))
    assert w.scores.phases == {Phase.INFUSION, Phase.RECOVERY}
    assert w.scores.interval_s == {Phase.INFUSION: 900, Phase.RECOVERY: 900}
    assert w.scores.scales == set(ScoreKind)
    assert (w.sedation.name, w.sedation.minimum, w.sedation.maximum) == ("MOAA/S", 0, 5)
    assert (w.sedation.alarm_at_or_below, w.sedation.alarm_priority) == (2, Priority.HIGH)
    assert (w.dissociation.name, w.dissociation.minimum, w.dissociation.maximum) == (
        "CADSS-6",
        0,
        24,
    )
    d = w.discharge
    assert (d.after_infusion_end_s, d.bp_readings, d.bp_within_fraction) == (1800, 2, 0.2)
    assert d.bp_below == BloodPressurePair(160, 100)
    assert (d.heart_rate_min, d.heart_rate_max, d.spo2_min) == (50, 110, 92)
    assert d.ticked == (
        "alert",
        "oriented",
        "ambulating",
        "dissociation_resolved",
        "escort_present",
    )
    assert PROTOCOL.baseline_readings == 2  # BRIEF: two seated NIBP readings
    assert PROTOCOL.nibp_interval(Phase.BASELINE) == 300  # ... 5 min apart


def test_a_protocol_without_the_section_gets_the_same_defaults() -> None:
    """Clinic files written before issue 20 keep working, with the brief's defaults."""
    bare = parse_protocol(DEFAULT[:WORKFLOW_START])
    assert bare.workflow == PROTOCOL.workflow == WorkflowSettings()


def test_the_workflow_module_stays_in_the_clinical_core() -> None:
    code = (
        "import sys, monitor.workflow;"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'app', 'dashboard', "
        "'simulators', 'contracts', 'vigil', 'fastapi', 'sqlalchemy', 'pydantic'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the baseline is the engine's ---------------------------------------------------------------

NIBP_QUALITIES = [0, 0, 0, 0, SampleQuality.ARTIFACT, SampleQuality.QUESTIONABLE,
                  SampleQuality.UNBOUND, SampleQuality.CUFF_INFLATING]  # fmt: skip
nibp_samples = st.lists(
    st.tuples(
        st.sampled_from([SYS, DIA]),
        st.one_of(st.floats(40, 260, allow_nan=False), st.just(math.nan)),
        st.sampled_from(NIBP_QUALITIES),
    ),
    max_size=8,
)


@pytest.mark.parametrize("evaluator", ["vector", "reference"])
@pytest.mark.parametrize("readings", [2, 3])
@settings(SETTINGS, max_examples=100)
@given(rows=nibp_samples)
def test_baseline_is_the_engines(
    evaluator: Literal["vector", "reference"], readings: int, rows: list[tuple[Vital, float, int]]
) -> None:
    """Whatever readings arrive (flagged, not a number, more than needed), the pre-infusion
    check's baseline is bit for bit the one the engine's baseline-relative rules use."""
    protocol = parse_protocol(DEFAULT.replace("readings = 2", f"readings = {readings}", 1))
    engine = AlarmEngine(protocol, evaluator=evaluator)
    engine.add_session("s", Phase.BASELINE, 0.0)
    samples = [VitalSample(v, x, 10.0 * (i + 1), int(q)) for i, (v, x, q) in enumerate(rows)]
    for s in samples:
        engine.ingest(engine.batch([("s", s.vital, s.value, s.time, s.quality)]))
    mine = baseline_from_readings(reversed(samples), protocol)  # order given does not matter
    assert mine.sbp == engine.baseline("s", SYS)
    assert mine.dbp == engine.baseline("s", DIA)


def test_samples_in_phase_follow_the_phase_history() -> None:
    history = [PhaseChange(Phase.CHECKED_IN, 0), PhaseChange(Phase.BASELINE, 100),
               PhaseChange(Phase.INFUSION, 700)]  # fmt: skip
    samples = [*bp(99, 200, 120), *bp(100, 130, 80), *bp(699, 132, 82), *bp(700, 190, 110)]
    taken = samples_in_phase(samples, history, Phase.BASELINE)
    assert [(s.time, s.value) for s in taken] == [(100, 130), (100, 80), (699, 132), (699, 82)]
    assert phase_at(history, 99.9) is Phase.CHECKED_IN
    assert phase_at(history, -1) is None
    with pytest.raises(ValueError, match="time order"):
        phase_at(list(reversed(history)), 50)


# --- the pre-infusion check ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sbp", "dbp", "outcome"),
    [
        (139, 89, PreInfusion.GO),  # just below both advisory limits
        (139.5, 89.5, PreInfusion.GO),
        (140, 80, PreInfusion.ADVISORY),  # at the SBP advisory
        (120, 90, PreInfusion.ADVISORY),  # at the DBP advisory
        (140.5, 89, PreInfusion.ADVISORY),
        (159, 99, PreInfusion.ADVISORY),  # just below both override limits
        (159.5, 99.5, PreInfusion.ADVISORY),
        (160, 80, PreInfusion.NEEDS_OVERRIDE),  # at the SBP override
        (120, 100, PreInfusion.NEEDS_OVERRIDE),  # at the DBP override
        (160.5, 100.5, PreInfusion.NEEDS_OVERRIDE),
    ],
)
def test_pre_infusion_limits(sbp: float, dbp: float, outcome: PreInfusion) -> None:
    verdict = pre_infusion_check(baseline_of((sbp, dbp), (sbp, dbp)), PROTOCOL)
    assert verdict.outcome is outcome
    assert verdict.baseline == Baseline(sbp, dbp)
    assert verdict.needs_override == (outcome is PreInfusion.NEEDS_OVERRIDE)


def test_pre_infusion_verdict_names_the_readings_and_limits() -> None:
    verdict = pre_infusion_check(baseline_of((158, 96), (172, 104)), PROTOCOL)  # mean 165/100
    assert verdict.outcome is PreInfusion.NEEDS_OVERRIDE
    assert [(r.vital, r.value, r.limit) for r in verdict.reached] == [(SYS, 165, 160),
                                                                      (DIA, 100, 100)]  # fmt: skip
    assert verdict.text == "Baseline 165/100: SBP 165 ≥ 160, DBP 100 ≥ 100: a physician's override is needed"  # fmt: skip  # noqa: E501
    assert sorted((r.vital, r.value) for r in verdict.readings) == [
        (DIA, 96), (DIA, 104), (SYS, 158), (SYS, 172)]  # fmt: skip

    advisory = pre_infusion_check(baseline_of((138, 92), (140, 88)), PROTOCOL)  # 139/90
    assert [r.text for r in advisory.reached] == ["DBP 90 ≥ 90"]
    assert advisory.text == "Baseline 139/90: DBP 90 ≥ 90: advisory (override needed at 160/100)"

    go = pre_infusion_check(baseline_of((128, 82), (130, 80)), PROTOCOL)
    assert (go.outcome, go.reached) == (PreInfusion.GO, ())
    assert go.text == "Baseline 129/81: below the advisory 140/90"


def test_pre_infusion_judges_the_mean_of_the_last_readings() -> None:
    """One high reading among two is averaged (150 and 168 → 159), as the engine averages;
    an early reading beyond the last two does not count; a flagged one never does."""
    assert pre_infusion_check(baseline_of((150, 80), (168, 80)), PROTOCOL).outcome is (
        PreInfusion.ADVISORY
    )
    assert pre_infusion_check(baseline_of((150, 80), (170, 80)), PROTOCOL).outcome is (
        PreInfusion.NEEDS_OVERRIDE
    )
    assert pre_infusion_check(baseline_of((210, 120), (130, 80), (132, 82)), PROTOCOL).outcome is (
        PreInfusion.GO
    )
    flagged = [*baseline_of((130, 80), (132, 82)), *bp(900, 210, 120, SampleQuality.ARTIFACT)]
    assert pre_infusion_check(flagged, PROTOCOL).outcome is PreInfusion.GO


def test_pre_infusion_without_a_baseline_is_incomplete_never_go() -> None:
    one = pre_infusion_check(baseline_of((120, 80)), PROTOCOL)
    assert one.outcome is PreInfusion.INCOMPLETE
    assert one.text == "Baseline incomplete: 1 of 2 SBP and 1 of 2 DBP readings"
    flagged = [*bp(0, 120, 80), *bp(300, 122, 81, SampleQuality.QUESTIONABLE)]
    assert pre_infusion_check(flagged, PROTOCOL).outcome is PreInfusion.INCOMPLETE
    assert pre_infusion_check([], PROTOCOL).baseline == Baseline(None, None)


def test_pre_infusion_limits_come_from_the_protocol() -> None:
    clinic = with_workflow(
        "advisory = { sbp = 140, dbp = 90 }", "advisory = { sbp = 150, dbp = 95 }"
    )
    readings = baseline_of((145, 85), (145, 85))
    assert pre_infusion_check(readings, PROTOCOL).outcome is PreInfusion.ADVISORY
    assert pre_infusion_check(readings, clinic).outcome is PreInfusion.GO


RANK = {PreInfusion.GO: 0, PreInfusion.ADVISORY: 1, PreInfusion.NEEDS_OVERRIDE: 2}


@SETTINGS
@given(
    pairs=st.lists(st.tuples(st.floats(60, 240), st.floats(30, 140)), min_size=2, max_size=4),
    which=st.integers(0, 7),
    rise=st.floats(0, 80),
)
def test_raising_a_reading_never_lowers_the_verdict(
    pairs: list[tuple[float, float]], which: int, rise: float
) -> None:
    """Raising any blood pressure reading never turns needs-override (or advisory) into go."""
    readings = baseline_of(*pairs)
    before = pre_infusion_check(readings, PROTOCOL)
    i = which % len(readings)
    raised = list(readings)
    raised[i] = VitalSample(readings[i].vital, readings[i].value + rise, readings[i].time)
    after = pre_infusion_check(raised, PROTOCOL)
    assert RANK[after.outcome] >= RANK[before.outcome]


# --- the score schedule -------------------------------------------------------------------------

INFUSION_START, RECOVERY_START, DISCHARGE = 1000.0, 3400.0, 9000.0
HISTORY = [
    PhaseChange(Phase.CHECKED_IN, 0),
    PhaseChange(Phase.BASELINE, 100),
    PhaseChange(Phase.INFUSION, INFUSION_START),
    PhaseChange(Phase.RECOVERY, RECOVERY_START),
    PhaseChange(Phase.DISCHARGED, DISCHARGE),
]
MOAAS = ScoreKind.SEDATION


def sedation(*times: float, value: float = 5) -> list[ScoreRecord]:
    return [ScoreRecord(MOAAS, value, t) for t in times]


@pytest.mark.parametrize(
    ("after_start", "state"),
    [
        (0, ScoreState.UP_TO_DATE),
        (899, ScoreState.UP_TO_DATE),  # just before the 15 min interval
        (900, ScoreState.DUE),  # at it
        (901, ScoreState.DUE),
        (1199, ScoreState.DUE),  # just before the 5 min grace ends
        (1200, ScoreState.OVERDUE),  # at it
        (1201, ScoreState.OVERDUE),
    ],
)
def test_score_due_and_overdue_from_infusion_start(after_start: float, state: ScoreState) -> None:
    status = score_status(MOAAS, HISTORY, [], INFUSION_START + after_start, PROTOCOL)
    assert status.state is state
    assert (status.next_due, status.overdue_at) == (INFUSION_START + 900, INFUSION_START + 1200)
    assert status.last_score is None


def test_a_score_restarts_the_interval() -> None:
    scores = sedation(INFUSION_START + 1100)  # recorded while due
    status = score_status(MOAAS, HISTORY, scores, INFUSION_START + 1300, PROTOCOL)
    assert (status.state, status.last_score) == (ScoreState.UP_TO_DATE, INFUSION_START + 1100)
    assert status.next_due == INFUSION_START + 2000
    assert status.text == "MOAA/S next due in 11 min"
    overdue = score_status(MOAAS, HISTORY, scores, INFUSION_START + 2300, PROTOCOL)
    assert (overdue.state, overdue.text) == (ScoreState.OVERDUE, "MOAA/S overdue: due 5 min ago")


def test_the_schedule_runs_on_from_infusion_into_recovery() -> None:
    """Recovery does not restart the clock: a score last recorded at minute 30 of the
    infusion is due at minute 45, five minutes into recovery."""
    scores = sedation(INFUSION_START + 1800)
    status = score_status(MOAAS, HISTORY, scores, RECOVERY_START + 300, PROTOCOL)
    assert (status.state, status.next_due) == (ScoreState.DUE, INFUSION_START + 2700)
    unscored = score_status(MOAAS, HISTORY, [], RECOVERY_START + 1, PROTOCOL)
    assert (unscored.state, unscored.overdue_at) == (ScoreState.OVERDUE, INFUSION_START + 1200)


def test_each_phase_uses_its_own_interval() -> None:
    clinic = with_workflow(
        "interval_s = { infusion = 900, recovery = 900 }",
        "interval_s = { infusion = 600, recovery = 1800 }",
    )
    assert score_status(MOAAS, HISTORY, [], INFUSION_START + 600, clinic).state is ScoreState.DUE
    in_recovery = score_status(MOAAS, HISTORY, sedation(3300), RECOVERY_START + 1000, clinic)
    assert (in_recovery.next_due, in_recovery.state) == (3300 + 1800, ScoreState.UP_TO_DATE)


def test_scores_outside_the_scored_run_or_after_now_do_not_count() -> None:
    early = sedation(INFUSION_START - 10)  # at baseline, before the infusion
    later = sedation(INFUSION_START + 2000)  # not yet recorded at the time asked about
    status = score_status(MOAAS, HISTORY, early + later, INFUSION_START + 1200, PROTOCOL)
    assert (status.state, status.last_score) == (ScoreState.OVERDUE, None)
    other_scale = [ScoreRecord(ScoreKind.DISSOCIATION, 3, INFUSION_START + 800)]
    assert score_status(MOAAS, HISTORY, other_scale, INFUSION_START + 1200, PROTOCOL).state is (
        ScoreState.OVERDUE
    )


@pytest.mark.parametrize("now", [50, 500, DISCHARGE, DISCHARGE + 5000])
def test_no_score_is_due_outside_infusion_and_recovery(now: float) -> None:
    status = score_status(MOAAS, HISTORY, [], now, PROTOCOL)
    assert (status.state, status.next_due) == (ScoreState.NOT_SCHEDULED, None)


def test_a_clinic_may_leave_a_scale_unscheduled() -> None:
    clinic = with_workflow('scales = ["sedation", "dissociation"]', 'scales = ["sedation"]')
    statuses = score_statuses(HISTORY, [], INFUSION_START + 1500, clinic)
    assert statuses[ScoreKind.DISSOCIATION].state is ScoreState.NOT_SCHEDULED
    assert statuses[ScoreKind.DISSOCIATION].text == "CADSS-6: not due for this clinic"
    assert statuses[MOAAS].state is ScoreState.OVERDUE


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[PhaseChange], list[ScoreRecord], float]:
    """A phase history through some of the phases in order, scores of both scales, a time."""
    phases = [p for p in Phase if draw(st.booleans())] or [Phase.INFUSION]
    history, t = [], 0.0
    for phase in phases:
        t += draw(st.sampled_from([0.0, 60.0, 300.0, 899.0, 900.0, 1200.0, 2400.0]))
        history.append(PhaseChange(phase, t))
    end = t + 4000
    scores = draw(
        st.lists(
            st.builds(
                ScoreRecord,
                st.sampled_from(list(ScoreKind)),
                st.integers(0, 5).map(float),
                st.floats(0, end).map(round),
            ),
            max_size=6,
        )
    )
    return history, scores, draw(st.floats(0, end).map(round))


@SETTINGS
@given(session=sessions(), kind=st.sampled_from(list(ScoreKind)))
def test_never_overdue_before_interval_and_grace(
    session: tuple[list[PhaseChange], list[ScoreRecord], float], kind: ScoreKind
) -> None:
    """Overdue exactly when interval + grace have passed since the later of the last score
    and the start of the scored phases; never earlier."""
    history, scores, now = session
    schedule = PROTOCOL.workflow.scores
    status = score_status(kind, history, scores, now, PROTOCOL)
    phase = phase_at(history, now)
    if phase not in schedule.phases:
        assert status.state is ScoreState.NOT_SCHEDULED
        return
    # The oracle: entries into a scored phase from an unscored one (or from nothing).
    run_starts = [
        c.since
        for before, c in zip([None, *history], history, strict=False)
        if c.since <= now
        and c.phase in schedule.phases
        and (before is None or before.phase not in schedule.phases)
    ]
    started = max(run_starts)
    counted = [s.time for s in scores if s.kind is kind and started <= s.time <= now]
    since = now - max([started, *counted])
    wait = schedule.interval_s[phase]
    assert (status.state is ScoreState.OVERDUE) == (since >= wait + schedule.overdue_after_s)
    assert (status.state is ScoreState.UP_TO_DATE) == (since < wait)


# --- the deep-sedation alarm --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "raised"), [(0, True), (1, True), (2, True), (2.5, False), (3, False), (5, False)]
)
def test_sedation_alarm_at_moaas_two_or_below(score: float, raised: bool) -> None:
    alarm = sedation_alarm(score, PROTOCOL)
    assert alarm.raised is raised
    assert (alarm.rule_id, alarm.kind, alarm.priority, alarm.limit) == (
        "sedation_deep",
        AlarmKind.PHYSIOLOGICAL,
        Priority.HIGH,
        2,
    )


def test_sedation_alarm_text_reads_like_an_alarm() -> None:
    assert sedation_alarm(2, PROTOCOL).text == "MOAA/S 2 ≤ 2: deep sedation"
    assert sedation_alarm(4, PROTOCOL).text == "MOAA/S 4"


def test_sedation_alarm_priority_and_limit_come_from_the_protocol() -> None:
    clinic = with_workflow('alarm_priority = "high"', 'alarm_priority = "crisis"')
    assert sedation_alarm(1, clinic).priority is Priority.CRISIS
    stricter = with_workflow("alarm_at_or_below = 2", "alarm_at_or_below = 3")
    assert sedation_alarm(3, stricter).raised


@pytest.mark.parametrize("score", [-1, 5.5, 6, math.nan, math.inf])
def test_scores_off_the_scale_are_refused(score: float) -> None:
    with pytest.raises(ValueError, match=r"MOAA/S .* outside its range 0–5"):
        sedation_alarm(score, PROTOCOL)
    with pytest.raises(ValueError, match="CADSS-6"):
        check_score(ScoreKind.DISSOCIATION, 25 if math.isfinite(score) else score, PROTOCOL)
    assert check_score(ScoreKind.DISSOCIATION, 24, PROTOCOL) == 24


# --- discharge readiness ------------------------------------------------------------------------

END = RECOVERY_START  # infusion end
READY_AT = END + 1800
BASELINE = Baseline(130, 80)


def recovered(now: float = READY_AT) -> list[VitalSample]:
    """A calm recovery: NIBP every 15 min, HR and SpO2 every second of the last minute."""
    samples = [*bp(END + 900, 128, 80), *bp(END + 1700, 126, 78)]
    for t in range(int(now) - 60, int(now) + 1):
        samples += [VitalSample(Vital.HR, 72, t), VitalSample(Vital.SPO2, 97, t)]
    return samples


def readiness_of(
    vitals: list[VitalSample] | None = None,
    *,
    now: float = READY_AT,
    ticks: frozenset[str] = TICKS,
    baseline: Baseline | None = BASELINE,
    scores: list[ScoreRecord] | None = None,
    protocol: Protocol = PROTOCOL,
) -> dict[str, tuple[bool, str]]:
    result = discharge_readiness(
        recovered(now) if vitals is None else vitals,
        HISTORY,
        ticks,
        baseline,
        now,
        protocol,
        scores or [],
    )
    assert result.ready == all(c.met for c in result.criteria)
    return {c.id: (c.met, c.text) for c in result.criteria}


def met(criteria: dict[str, tuple[bool, str]], criterion: str) -> bool:
    return criteria[criterion][0]


def test_a_calm_recovery_is_ready_after_30_minutes() -> None:
    result = discharge_readiness(recovered(), HISTORY, TICKS, BASELINE, READY_AT, PROTOCOL)
    assert result.ready, result.open
    assert (result.infusion_end, result.earliest) == (END, READY_AT)
    assert result.text == "Ready for discharge"
    assert [c.id for c in result.criteria] == [*MEASURED_CRITERIA, *TICKS_IN_ORDER]
    assert {c.kind for c in result.criteria[:4]} == {CriterionKind.MEASURED}
    assert {c.kind for c in result.criteria[4:]} == {CriterionKind.TICKED}
    texts = {c.id: c.text for c in result.criteria}
    assert texts["blood_pressure"] == "SBP 128, 126; DBP 80, 78"
    assert (texts["heart_rate"], texts["spo2"]) == ("HR 72", "SpO2 97")


TICKS_IN_ORDER = PROTOCOL.workflow.discharge.ticked


@pytest.mark.parametrize(("after_end", "ready"), [(1799, False), (1800, True), (1801, True)])
def test_thirty_minutes_after_infusion_end(after_end: float, ready: bool) -> None:
    criteria = readiness_of(now=END + after_end)
    assert met(criteria, "time_since_infusion_end") is ready
    if not ready:
        assert criteria["time_since_infusion_end"][1] == "29 min of 30 min since infusion end"


def test_nothing_measured_is_met_before_the_infusion_ends() -> None:
    result = discharge_readiness(recovered(), HISTORY, TICKS, BASELINE, END - 1, PROTOCOL)
    assert not result.ready
    assert [c.id for c in result.open] == list(MEASURED_CRITERIA)
    assert {c.text for c in result.open} == {"infusion not ended"}
    assert result.infusion_end is None


def with_last_bp(sbp: float, dbp: float, quality: int = 0) -> list[VitalSample]:
    return [*recovered(), *bp(READY_AT - 10, sbp, dbp, quality)]


@pytest.mark.parametrize(
    ("sbp", "dbp", "ok"),
    [
        (159, 99, True),  # just below 160/100 (and more than 20 % above the baseline 130/80)
        (159.5, 80, True),
        (160, 80, False),  # at 160: 23 % above 130, so not within 20 % either
        (126, 100, False),  # at 100: 25 % above 80
    ],
)
def test_bp_below_160_over_100(sbp: float, dbp: float, ok: bool) -> None:
    assert met(readiness_of(with_last_bp(sbp, dbp)), "blood_pressure") is ok


@pytest.mark.parametrize(
    ("sbp", "dbp", "ok"),
    [
        (180, 80, True),  # exactly 20 % above a baseline of 150
        (179.5, 80, True),
        (180.5, 80, False),  # just beyond, and not below 160
        (150, 108, True),  # exactly 20 % above a DBP baseline of 90
        (150, 108.5, False),
    ],
)
def test_bp_within_20_percent_of_baseline(sbp: float, dbp: float, ok: bool) -> None:
    criteria = readiness_of(with_last_bp(sbp, dbp), baseline=Baseline(150, 90))
    assert met(criteria, "blood_pressure") is ok
    if not ok:
        assert "from baseline" in criteria["blood_pressure"][1]


def test_bp_without_a_baseline_has_only_the_absolute_limit() -> None:
    assert met(readiness_of(with_last_bp(159, 99), baseline=None), "blood_pressure")
    criteria = readiness_of(with_last_bp(165, 80), baseline=Baseline(None, 80))
    assert criteria["blood_pressure"] == (False, "SBP 165 ≥ 160, no baseline")


def test_bp_low_readings_pass_the_rule_as_the_brief_writes_it() -> None:
    """The readiness rule is an upper bound: 85/50 is below 160/100. Low BP is the low-BP
    alarms' business (docs/WORKFLOW.md); this test pins the rule as written."""
    assert met(readiness_of(with_last_bp(85, 50)), "blood_pressure")


def test_bp_uses_the_last_two_usable_readings_after_infusion_end() -> None:
    high_then_calm = [*bp(END + 300, 175, 105), *recovered()]
    assert met(readiness_of(high_then_calm), "blood_pressure")
    calm_then_high = with_last_bp(175, 80)
    assert not met(readiness_of(calm_then_high), "blood_pressure")
    flagged_high = with_last_bp(175, 105, SampleQuality.ARTIFACT)
    assert met(readiness_of(flagged_high), "blood_pressure")
    before_end = [s for s in recovered() if s.vital not in (SYS, DIA)]
    before_end += [*bp(END - 600, 120, 80), *bp(END - 1, 120, 80), *bp(END + 900, 120, 80)]
    assert readiness_of(before_end)["blood_pressure"] == (
        False,
        "1 of 2 SBP readings since infusion end; 1 of 2 DBP readings since infusion end",
    )


def with_latest(vital: Vital, value: float, quality: int = 0) -> list[VitalSample]:
    return [*recovered(), VitalSample(vital, value, READY_AT, quality)]


@pytest.mark.parametrize(
    ("value", "ok"),
    [(49, False), (49.9, False), (50, True), (51, True), (109, True), (110, True),
     (110.1, False), (111, False)],
)  # fmt: skip
def test_heart_rate_50_to_110(value: float, ok: bool) -> None:
    assert met(readiness_of(with_latest(Vital.HR, value)), "heart_rate") is ok
    # Pulse rate from the oximeter counts the same (a chair without ECG).
    no_ecg = [s for s in with_latest(Vital.PR, value) if s.vital is not Vital.HR]
    assert met(readiness_of(no_ecg), "heart_rate") is ok


@pytest.mark.parametrize(("value", "ok"), [(91, False), (91.9, False), (92, True), (93, True)])
def test_spo2_92_or_more(value: float, ok: bool) -> None:
    criteria = readiness_of(with_latest(Vital.SPO2, value))
    assert met(criteria, "spo2") is ok
    if not ok:
        assert criteria["spo2"][1] == f"SpO2 {value:g} < 92"


def test_flagged_samples_do_not_count() -> None:
    assert met(readiness_of(with_latest(Vital.SPO2, 85, SampleQuality.PROBE_OFF)), "spo2")
    assert met(readiness_of(with_latest(Vital.HR, 140, SampleQuality.ARTIFACT)), "heart_rate")


@pytest.mark.parametrize(("age", "ok"), [(599, True), (600, True), (601, False)])
def test_heart_rate_and_spo2_must_be_recent(age: float, ok: bool) -> None:
    vitals = [s for s in recovered(READY_AT - age) if s.time <= READY_AT - age]
    criteria = readiness_of(vitals)
    assert (met(criteria, "heart_rate"), met(criteria, "spo2")) == (ok, ok)
    if not ok:
        assert criteria["spo2"][1] == "latest SpO2 is 10 min old (at most 10 min)"


def test_samples_after_now_do_not_count() -> None:
    future = [*recovered(), VitalSample(Vital.SPO2, 80, READY_AT + 1), *bp(READY_AT + 1, 190, 120)]
    criteria = readiness_of(future)
    assert met(criteria, "spo2")
    assert met(criteria, "blood_pressure")


@pytest.mark.parametrize("missing", PROTOCOL.workflow.discharge.ticked)
def test_every_ticked_criterion_is_needed(missing: str) -> None:
    result = discharge_readiness(
        recovered(), HISTORY, TICKS - {missing}, BASELINE, READY_AT, PROTOCOL
    )
    assert not result.ready
    assert [(c.id, c.text) for c in result.open] == [(missing, "not ticked")]
    assert result.text == f"Not ready: {missing.replace('_', ' ')}"


def test_unknown_ticks_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown discharge criteria"):
        discharge_readiness([], HISTORY, {"alert", "happy"}, BASELINE, READY_AT, PROTOCOL)


@pytest.mark.parametrize(
    ("kind", "values", "criterion", "ok"),
    [
        (ScoreKind.SEDATION, [5], "alert", True),
        (ScoreKind.SEDATION, [4], "alert", False),  # just below "alert" (MOAA/S 5)
        (ScoreKind.SEDATION, [4, 5], "alert", True),  # the latest counts
        (ScoreKind.SEDATION, [5, 4], "alert", False),
        (ScoreKind.DISSOCIATION, [2], "dissociation_resolved", True),  # at the threshold
        (ScoreKind.DISSOCIATION, [1], "dissociation_resolved", True),
        (ScoreKind.DISSOCIATION, [3], "dissociation_resolved", False),  # just above it
        (ScoreKind.DISSOCIATION, [9, 0], "dissociation_resolved", True),
    ],
)
def test_a_tick_stands_only_when_the_latest_score_agrees(
    kind: ScoreKind, values: list[float], criterion: str, ok: bool
) -> None:
    scores = [ScoreRecord(kind, v, END + 600 * (i + 1)) for i, v in enumerate(values)]
    scores.append(ScoreRecord(kind, 0 if kind is ScoreKind.SEDATION else 24, READY_AT + 5))
    criteria = readiness_of(scores=scores)  # the last score, after now, is ignored
    assert met(criteria, criterion) is ok
    if criterion == "alert" and not ok:
        assert criteria["alert"][1] == "ticked, but the latest MOAA/S is 4 (needs ≥ 5)"


def test_a_clinic_can_switch_off_a_scale_confirming_a_tick() -> None:
    clinic = with_workflow('confirms = "alert"', 'confirms = ""')
    scores = [ScoreRecord(ScoreKind.SEDATION, 3, END + 60)]
    assert not met(readiness_of(scores=scores), "alert")
    assert met(readiness_of(scores=scores, protocol=clinic), "alert")


def test_discharge_numbers_come_from_the_protocol() -> None:
    clinic = with_workflow("spo2_min = 92", "spo2_min = 94")
    assert not met(readiness_of(with_latest(Vital.SPO2, 93), protocol=clinic), "spo2")
    one_reading = with_workflow("bp_readings = 2", "bp_readings = 1")
    assert met(readiness_of(with_last_bp(130, 80), protocol=one_reading), "blood_pressure")
    assert readiness_of(with_last_bp(130, 80), protocol=one_reading)["blood_pressure"][1] == (
        "SBP 130; DBP 80"
    )


VITAL_VALUES = {
    Vital.HR: [45, 49, 50, 80, 110, 111, 115],
    Vital.PR: [49, 70, 111],
    Vital.SPO2: [88, 91, 92, 97],
    SYS: [85, 110, 150, 159, 160, 175, 180, 190],
    DIA: [50, 70, 95, 99, 100, 110, 114],
}
Case = tuple[list[VitalSample], frozenset[str], list[ScoreRecord], Baseline | None, float]


@st.composite
def recoveries(draw: st.DrawFn) -> Case:
    """Mostly near-ready recoveries (a calm one, every box ticked, around minute 30) with a
    few things added that may spoil them: readings in or out of range, flagged or not, late
    or early, a missing tick, a disagreeing score, another baseline."""
    now = float(draw(st.sampled_from([END + 1500, END + 1799, END + 1800, END + 2400])))
    vitals = recovered(now) if draw(st.integers(0, 5)) else []
    vitals += [
        VitalSample(
            vital,
            draw(st.sampled_from(VITAL_VALUES[vital])),
            now - draw(st.sampled_from([-1, 0, 1, 30, 599, 600, 601, 900, 1800, 2000])),
            draw(st.sampled_from([0, 0, 0, int(SampleQuality.ARTIFACT)])),
        )
        for vital in draw(st.lists(st.sampled_from(list(VITAL_VALUES)), max_size=4))
    ]
    ticks = TICKS - frozenset(draw(st.lists(st.sampled_from(TICKS_IN_ORDER), max_size=1)))
    scores = draw(
        st.lists(
            st.builds(
                ScoreRecord,
                st.sampled_from(list(ScoreKind)),
                st.integers(0, 5).map(float),
                st.sampled_from([END + 600, now - 60, now, now + 1]),
            ),
            max_size=2,
        )
    )
    baseline = draw(st.sampled_from([None, BASELINE, Baseline(150, 95), Baseline(None, 80)]))
    return vitals, ticks, scores, baseline, now


@settings(SETTINGS, max_examples=600)
@given(case=recoveries())
def test_never_ready_with_an_open_criterion(case: Case) -> None:
    """Ready only when every criterion is met; and then, checked independently of the code:
    30 min have passed, every box is ticked, the latest usable SpO2 and heart rate are in
    range, and each of the last two usable readings of each NIBP vital is below its limit
    or within 20 % of its baseline."""
    vitals, ticks, scores, baseline, now = case
    result = discharge_readiness(vitals, HISTORY, ticks, baseline, now, PROTOCOL, scores)
    assert result.ready == (not result.open)
    assert len(result.criteria) == len(MEASURED_CRITERIA) + len(TICKS_IN_ORDER)
    event("ready" if result.ready else "not ready")  # --hypothesis-show-statistics: both occur
    if not result.ready:
        return
    assert now - END >= 1800
    assert ticks == TICKS
    usable = sorted(
        (s for s in vitals if s.quality == 0 and END <= s.time <= now), key=lambda s: s.time
    )
    assert [s.value for s in usable if s.vital is Vital.SPO2][-1] >= 92
    assert 50 <= [s.value for s in usable if s.vital in (Vital.HR, Vital.PR)][-1] <= 110
    for vital, limit in ((SYS, 160), (DIA, 100)):
        base = None if baseline is None else (baseline.sbp if vital is SYS else baseline.dbp)
        last_two = [s.value for s in usable if s.vital is vital][-2:]
        assert len(last_two) == 2
        for value in last_two:
            assert value < limit or (base is not None and abs(value - base) <= 0.2 * base + 1e-9)


# --- the protocol's [workflow] section: errors name the section, the key and the line -----------

W_CASES = [
    # (replace this, with this, section, key, message fragment)
    ("advisory = { sbp = 140, dbp = 90 }", "advisory = { sbp = 140 }", "workflow.pre_infusion",
     "advisory", "must be a table of sbp and dbp"),
    ("advisory = { sbp = 140, dbp = 90 }", 'advisory = { sbp = "140", dbp = 90 }',
     "workflow.pre_infusion", "advisory", "sbp must be a number"),
    ("override = { sbp = 160, dbp = 100 }", "override = { sbp = 160, dbp = 400 }",
     "workflow.pre_infusion", "override", "dbp 400 is outside NIBP dia's range"),
    ("override = { sbp = 160, dbp = 100 }", "override = { sbp = 130, dbp = 100 }",
     "workflow.pre_infusion", "override", "below the advisory 140/90"),
    ('scales = ["sedation", "dissociation"]', 'scales = ["sedation", "agitation"]',
     "workflow.scores", "scales", "'agitation' is not one of"),
    ("interval_s = { infusion = 900, recovery = 900 }", "interval_s = { infusion = 900 }",
     "workflow.scores", "interval_s", "no interval for recovery"),
    ("interval_s = { infusion = 900, recovery = 900 }",
     "interval_s = { infusion = 900, recovery = 900, baseline = 300 }", "workflow.scores",
     "interval_s", "baseline is not in phases"),
    ("interval_s = { infusion = 900, recovery = 900 }",
     "interval_s = { infusion = 0, recovery = 900 }", "workflow.scores", "interval_s",
     "infusion must be a number of seconds > 0"),
    ("overdue_after_s = 300", "overdue_after_s = -1", "workflow.scores", "overdue_after_s",
     "must be at least 0"),
    ("max = 5", "max = 0", "workflow.sedation", "max", "must be greater than min"),
    ("alarm_at_or_below = 2", "alarm_at_or_below = 6", "workflow.sedation", "alarm_at_or_below",
     "6 is outside the scale's range 0 to 5"),
    ('alarm_priority = "high"', 'alarm_priority = "urgent"', "workflow.sedation",
     "alarm_priority", "'urgent' is not one of"),
    ('alarm_id = "sedation_deep"', 'alarm_id = "spo2_desat"', "workflow.sedation", "alarm_id",
     "already the id of a rule"),
    ('alarm_id = "sedation_deep"', 'alarm_id = "Deep sedation"', "workflow.sedation", "alarm_id",
     "lower case letters"),
    ('confirms = "alert"', 'confirms = "awake"', "workflow.sedation", "confirms",
     "'awake' is not one of the ticked criteria"),
    ('name = "CADSS-6"', 'name = " "', "workflow.dissociation", "name", "must not be empty"),
    ("resolved_at_or_below = 2", "resolved_at_or_below = 30", "workflow.dissociation",
     "resolved_at_or_below", "30 is outside the scale's range 0 to 24"),
    ("bp_within_fraction = 0.20", "bp_within_fraction = 20", "workflow.discharge",
     "bp_within_fraction", "a fraction of the baseline, below 1"),
    ("bp_readings = 2", "bp_readings = 0", "workflow.discharge", "bp_readings",
     "must be at least 1"),
    ('heart_rate_vitals = ["hr", "pr"]', 'heart_rate_vitals = ["hr", "spo2"]',
     "workflow.discharge", "heart_rate_vitals", 'must list "hr", "pr" or both'),
    ("heart_rate_max = 110", "heart_rate_max = 50", "workflow.discharge", "heart_rate_max",
     "must be above heart_rate_min (50)"),
    ("spo2_min = 92", "spo2_min = 120", "workflow.discharge", "spo2_min", "at most 100"),
    ("after_infusion_end_s = 1800", "after_infusion_end = 1800", "workflow.discharge",
     "after_infusion_end", "unknown key"),
    ('ticked = ["alert", "oriented"', 'ticked = ["alert", "alert"', "workflow.discharge",
     "ticked", "lists a criterion twice"),
    ('ticked = ["alert", "oriented"', 'ticked = ["spo2", "oriented"', "workflow.discharge",
     "ticked", "'spo2' is measured by Vigil"),
    ('ticked = ["alert", "oriented"', 'ticked = ["Alert", "oriented"', "workflow.discharge",
     "ticked", "lower case letters"),
    ("[workflow.discharge]", "[workflow.recovery]\nx = 1\n[workflow.discharge]", None, "recovery",
     "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "section", "key", "message"), W_CASES)
def test_workflow_errors_name_the_section_key_and_line(
    old: str, new: str, section: str | None, key: str, message: str
) -> None:
    text = replace_in_workflow(old, new)
    with pytest.raises(ProtocolError) as caught:
        parse_protocol(text, source="clinic.toml")
    err = caught.value
    assert (err.rule_id, err.key) == (section, key)
    assert message in str(err)
    if section is not None:  # the line of the key in its section
        assert err.line is not None
        assert text.splitlines()[err.line - 1].lstrip().startswith(key)
        assert str(err).startswith(f"clinic.toml:{err.line}: '{section}': key '{key}': ")


def test_a_rule_may_not_take_the_default_sedation_alarm_id() -> None:
    """Without a [workflow] section the alarm id is the default, and still must be unique."""
    text = DEFAULT[:WORKFLOW_START].replace('id = "spo2_desat"', 'id = "sedation_deep"', 1)
    with pytest.raises(ProtocolError, match="'sedation_deep' is taken by a rule") as caught:
        parse_protocol(text)
    assert caught.value.key == "workflow"


def test_a_clinic_with_a_0_to_10_dissociation_rating() -> None:
    text = DEFAULT[WORKFLOW_START:]
    for old, new in (('name = "CADSS-6"', 'name = "Dissociation 0–10"'),
                     ("max = 24", "max = 10"),
                     ("resolved_at_or_below = 2", "resolved_at_or_below = 1")):  # fmt: skip
        assert old in text
        text = text.replace(old, new, 1)
    clinic = parse_protocol(DEFAULT[:WORKFLOW_START] + text)
    scale = clinic.workflow.dissociation
    assert (scale.name, scale.maximum, scale.resolved_at_or_below) == ("Dissociation 0–10", 10, 1)
    with pytest.raises(ValueError, match="Dissociation 0–10 11"):
        check_score(ScoreKind.DISSOCIATION, 11, clinic)


def test_docs_describe_every_workflow_key() -> None:
    doc = (REPO / "docs" / "WORKFLOW.md").read_text(encoding="utf-8")
    section = DEFAULT[WORKFLOW_START:]
    keys = {line.split("=")[0].strip() for line in section.splitlines() if "=" in line
            and not line.lstrip().startswith("#")}  # fmt: skip
    assert keys, section
    for key in sorted(keys):
        assert f"`{key}`" in doc, key
    for name in (
        "test_pre_infusion_limits",
        "test_sedation_alarm_at_moaas_two_or_below",
        "test_score_due_and_overdue_from_infusion_start",
        "test_bp_below_160_over_100",
    ):
        assert name in doc, name  # fmt: skip
