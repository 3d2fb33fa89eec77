"""The ketamine session's clinical decisions around the numbers (issue 20).

Pure and clock-free like the rest of monitor/: every function takes the session's data and
the time it is asked about (`now`), and returns a small frozen verdict with a human text.

* `pre_infusion_check`: go, advisory or needs a physician's override, judged on the baseline
  as the alarm engine defines it (the mean of the last `[baseline] readings` usable NIBP
  readings per vital; `baseline_from_readings`).
* `score_status`: when the next sedation or dissociation score is due, and whether it is due
  or overdue now.
* `sedation_alarm`: whether a sedation score raises the deep-sedation alarm, at which priority.
* `discharge_readiness`: each discharge criterion met or open, and whether all are met.

The numbers come from the protocol's `[workflow]` section (`monitor.protocol.WorkflowSettings`);
docs/WORKFLOW.md gives each rule, its default and its source.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from monitor.alarm_text import number
from monitor.conditions import untrusted_mask
from monitor.protocol import (
    MEASURED_CRITERIA,
    VITAL_LABEL,
    AlarmKind,
    Phase,
    Priority,
    Protocol,
    ScoreKind,
)
from monitor.vitals import Vital

# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VitalSample:
    """One stored sample: vital, value (canonical unit), time (epoch s), quality bits."""

    vital: Vital
    value: float
    time: float
    quality: int = 0


@dataclass(frozen=True, slots=True)
class PhaseChange:
    """The session entered `phase` at `since` (epoch s); a history lists them oldest first."""

    phase: Phase
    since: float


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """A score the nurse recorded: which scale, the value, when (epoch s)."""

    kind: ScoreKind
    value: float
    time: float


@dataclass(frozen=True, slots=True)
class Baseline:
    """The session's baseline blood pressure; None for a vital without one yet."""

    sbp: float | None
    dbp: float | None

    @property
    def text(self) -> str:
        return f"{_maybe(self.sbp)}/{_maybe(self.dbp)}"


def _maybe(value: float | None) -> str:
    return "–" if value is None else number(value)


# --- the engine's definitions, for lists of samples -----------------------------------------


def is_usable(sample: VitalSample, protocol: Protocol) -> bool:
    """The alarm engine's usable-sample test: a finite value with none of the protocol's
    untrusted quality flags (and not `unbound`; see monitor.conditions).

    The engine also holds SpO2 and PR while its low-signal check is active; that is state it
    keeps, not a property of the sample, and is not replayed here (docs/WORKFLOW.md).
    """
    return math.isfinite(sample.value) and not sample.quality & untrusted_mask(
        protocol, sample.vital
    )


def usable_samples(
    samples: Iterable[VitalSample], vitals: Collection[Vital], protocol: Protocol
) -> list[VitalSample]:
    """The usable samples of these vitals in time order (ties keep their order, as the
    engine applies them)."""
    chosen = [s for s in samples if s.vital in vitals and is_usable(s, protocol)]
    return sorted(chosen, key=lambda s: s.time)


def phase_at(history: Sequence[PhaseChange], time: float) -> Phase | None:
    """The session's phase at `time`: the last change at or before it (None before the first)."""
    _check_history(history)
    current: Phase | None = None
    for change in history:
        if change.since > time:
            break
        current = change.phase
    return current


def samples_in_phase(
    samples: Iterable[VitalSample], history: Sequence[PhaseChange], phase: Phase
) -> list[VitalSample]:
    """The samples taken while the session was in `phase`, by their time."""
    return [s for s in samples if phase_at(history, s.time) is phase]


def baseline_from_readings(readings: Iterable[VitalSample], protocol: Protocol) -> Baseline:
    """The baseline as the alarm engine keeps it: per NIBP vital, the mean of the last
    `protocol.baseline_readings` usable readings (None while there are fewer).

    `readings` are the samples taken in the baseline phase (`samples_in_phase`). A test holds
    this to both evaluators' `baseline()`.
    """
    usable = usable_samples(readings, (Vital.NIBP_SYS, Vital.NIBP_DIA), protocol)
    return Baseline(
        _mean_of_last([s for s in usable if s.vital is Vital.NIBP_SYS], protocol),
        _mean_of_last([s for s in usable if s.vital is Vital.NIBP_DIA], protocol),
    )


def _mean_of_last(readings: Sequence[VitalSample], protocol: Protocol) -> float | None:
    n = protocol.baseline_readings
    if len(readings) < n:
        return None
    # The engines keep the last n readings in a ring of n slots (reading i in slot i % n) and
    # sum the slots in order; summing in that order gives the very same float.
    slot_order = sorted(range(len(readings) - n, len(readings)), key=lambda i: i % n)
    total = readings[slot_order[0]].value
    for i in slot_order[1:]:
        total = total + readings[i].value
    return total / n


def _check_history(history: Sequence[PhaseChange]) -> None:
    for before, after in itertools.pairwise(history):
        if after.since < before.since:
            raise ValueError("the phase history must be in time order")


# --- the pre-infusion check -----------------------------------------------------------------


class PreInfusion(enum.StrEnum):
    """The pre-infusion verdict on the baseline blood pressure."""

    INCOMPLETE = "incomplete"  # no baseline yet: fewer usable readings than the protocol asks
    GO = "go"
    ADVISORY = "advisory"  # at or above the advisory limit: the infusion may start
    NEEDS_OVERRIDE = "needs_override"  # at or above the override limit: a physician decides


@dataclass(frozen=True)
class LimitReached:
    """A baseline value at or above a limit ("SBP 165 ≥ 160")."""

    vital: Vital
    value: float
    limit: float

    @property
    def text(self) -> str:
        return f"{VITAL_LABEL[self.vital]} {number(self.value)} ≥ {number(self.limit)}"


@dataclass(frozen=True)
class PreInfusionVerdict:
    """The verdict, the baseline it judged, the readings that baseline is the mean of, and
    the limits of the verdict's level that the baseline reached (empty for go/incomplete)."""

    outcome: PreInfusion
    baseline: Baseline
    readings: tuple[VitalSample, ...]
    reached: tuple[LimitReached, ...]
    text: str

    @property
    def needs_override(self) -> bool:
        return self.outcome is PreInfusion.NEEDS_OVERRIDE


def pre_infusion_check(
    baseline_readings: Iterable[VitalSample], protocol: Protocol
) -> PreInfusionVerdict:
    """Judge the baseline blood pressure against the protocol's pre-infusion limits.

    `baseline_readings` are the samples taken in the baseline phase; the verdict is on their
    baseline (`baseline_from_readings`), so one high reading among two is averaged as the
    alarm engine does. Needs override when SBP or DBP reaches the override limit, advisory
    when either reaches the advisory limit, else go.
    """
    workflow = protocol.workflow
    usable = usable_samples(baseline_readings, (Vital.NIBP_SYS, Vital.NIBP_DIA), protocol)
    n = protocol.baseline_readings
    used: list[VitalSample] = []
    for vital in (Vital.NIBP_SYS, Vital.NIBP_DIA):
        used += [s for s in usable if s.vital is vital][-n:]
    baseline = baseline_from_readings(usable, protocol)
    if baseline.sbp is None or baseline.dbp is None:
        have = [
            f"{sum(s.vital is vital for s in usable)} of {n} {VITAL_LABEL[vital]}"
            for vital in (Vital.NIBP_SYS, Vital.NIBP_DIA)
        ]
        return PreInfusionVerdict(
            PreInfusion.INCOMPLETE,
            baseline,
            tuple(used),
            (),
            f"Baseline incomplete: {' and '.join(have)} readings",
        )
    levels = (
        (PreInfusion.NEEDS_OVERRIDE, workflow.override),
        (PreInfusion.ADVISORY, workflow.advisory),
    )
    for outcome, limit in levels:
        reached = tuple(
            LimitReached(vital, value, bound)
            for vital, value, bound in (
                (Vital.NIBP_SYS, baseline.sbp, limit.sbp),
                (Vital.NIBP_DIA, baseline.dbp, limit.dbp),
            )
            if value >= bound
        )
        if reached:
            found = ", ".join(r.text for r in reached)
            if outcome is PreInfusion.NEEDS_OVERRIDE:
                text = f"Baseline {baseline.text}: {found}: a physician's override is needed"
            else:
                text = (
                    f"Baseline {baseline.text}: {found}: advisory "
                    f"(override needed at {workflow.override.text})"
                )
            return PreInfusionVerdict(outcome, baseline, tuple(used), reached, text)
    return PreInfusionVerdict(
        PreInfusion.GO,
        baseline,
        tuple(used),
        (),
        f"Baseline {baseline.text}: below the advisory {workflow.advisory.text}",
    )


# --- scores: the schedule, the deep-sedation alarm ------------------------------------------


def scale_name(kind: ScoreKind, protocol: Protocol) -> str:
    """The clinic's name of the scale ("MOAA/S", "CADSS-6")."""
    workflow = protocol.workflow
    return workflow.sedation.name if kind is ScoreKind.SEDATION else workflow.dissociation.name


def check_score(kind: ScoreKind, value: float, protocol: Protocol) -> float:
    """The value if it is on the scale; ValueError naming the scale's range if not."""
    scale = (
        protocol.workflow.sedation if kind is ScoreKind.SEDATION else protocol.workflow.dissociation
    )
    if not (math.isfinite(value) and scale.minimum <= value <= scale.maximum):
        raise ValueError(
            f"{scale.name} {value!r} is outside its range "
            f"{number(scale.minimum)}–{number(scale.maximum)}"
        )
    return value


class ScoreState(enum.StrEnum):
    NOT_SCHEDULED = "not_scheduled"  # not a scored phase, or the clinic does not schedule it
    UP_TO_DATE = "up_to_date"
    DUE = "due"  # from `next_due`
    OVERDUE = "overdue"  # from `overdue_at` = next_due + the protocol's overdue_after_s


@dataclass(frozen=True)
class ScoreStatus:
    """Where one scale's schedule stands at `now`.

    `last_score` is the time of the last score that counts (recorded since the scored phases
    began), `next_due` and `overdue_at` are None when nothing is scheduled.
    """

    kind: ScoreKind
    state: ScoreState
    last_score: float | None
    next_due: float | None
    overdue_at: float | None
    text: str


def score_status(
    kind: ScoreKind,
    history: Sequence[PhaseChange],
    scores: Iterable[ScoreRecord],
    now: float,
    protocol: Protocol,
) -> ScoreStatus:
    """One scale's schedule at `now`.

    While the session is in a scored phase (default infusion and recovery), the next score is
    due one interval of the current phase after the later of the last score of this scale and
    the start of the run of scored phases (infusion start); it is overdue the protocol's
    grace later. A score recorded before that run (e.g. at baseline) does not count.
    """
    schedule = protocol.workflow.scores
    name = scale_name(kind, protocol)
    phase = phase_at(history, now)
    if kind not in schedule.scales or phase is None or phase not in schedule.phases:
        where = "for this clinic" if kind not in schedule.scales else f"in {_phase_text(phase)}"
        return ScoreStatus(
            kind, ScoreState.NOT_SCHEDULED, None, None, None, f"{name}: not due {where}"
        )
    start = _run_start(history, now, schedule.phases)
    last = max((s.time for s in scores if s.kind is kind and start <= s.time <= now), default=None)
    anchor = start if last is None else last
    next_due = anchor + schedule.interval_s[phase]
    overdue_at = next_due + schedule.overdue_after_s
    if now >= overdue_at:
        state, text = ScoreState.OVERDUE, f"{name} overdue: due {_duration(now - next_due)} ago"
    elif now >= next_due:
        state, text = ScoreState.DUE, f"{name} due now"
    else:
        state, text = ScoreState.UP_TO_DATE, f"{name} next due in {_duration(next_due - now)}"
    return ScoreStatus(kind, state, last, next_due, overdue_at, text)


def score_statuses(
    history: Sequence[PhaseChange], scores: Iterable[ScoreRecord], now: float, protocol: Protocol
) -> dict[ScoreKind, ScoreStatus]:
    """`score_status` of every scale."""
    recorded = list(scores)
    return {kind: score_status(kind, history, recorded, now, protocol) for kind in ScoreKind}


def _run_start(history: Sequence[PhaseChange], now: float, scored: Collection[Phase]) -> float:
    """When the unbroken run of scored phases the session is in at `now` began."""
    start: float | None = None
    for change in history:
        if change.since > now:
            break
        if change.phase not in scored:
            start = None  # the run is broken; a later scored phase starts a new one
        elif start is None:
            start = change.since
    return now if start is None else start


def _phase_text(phase: Phase | None) -> str:
    return "no phase" if phase is None else phase.value.replace("_", " ")


def _duration(seconds: float) -> str:
    return f"{int(seconds)} s" if seconds < 60 else f"{int(seconds // 60)} min"


@dataclass(frozen=True)
class SedationAlarm:
    """Whether a sedation score raises the deep-sedation alarm, with the alarm's fields."""

    raised: bool
    rule_id: str
    kind: AlarmKind
    priority: Priority
    value: float
    limit: float
    text: str


def sedation_alarm(score: float, protocol: Protocol) -> SedationAlarm:
    """A sedation score at or below the protocol's limit (MOAA/S ≤ 2) raises a physiological
    alarm of the protocol's priority; the text reads like every alarm's ("MOAA/S 2 ≤ 2: deep
    sedation"). ValueError if the score is not on the scale."""
    scale = protocol.workflow.sedation
    check_score(ScoreKind.SEDATION, score, protocol)
    raised = score <= scale.alarm_at_or_below
    if raised:
        text = f"{scale.name} {number(score)} ≤ {number(scale.alarm_at_or_below)}"
        if scale.alarm_advice:
            text += f": {scale.alarm_advice}"
    else:
        text = f"{scale.name} {number(score)}"
    return SedationAlarm(
        raised,
        scale.alarm_id,
        AlarmKind.PHYSIOLOGICAL,
        scale.alarm_priority,
        score,
        scale.alarm_at_or_below,
        text,
    )


# --- discharge readiness --------------------------------------------------------------------


class CriterionKind(enum.StrEnum):
    MEASURED = "measured"  # computed from the stored vitals and phase changes
    TICKED = "ticked"  # ticked by the nurse


@dataclass(frozen=True)
class Criterion:
    id: str
    kind: CriterionKind
    met: bool
    text: str

    @property
    def label(self) -> str:
        return self.id.replace("_", " ")


@dataclass(frozen=True)
class Readiness:
    """Each discharge criterion met or open; `ready` only when every one is met.

    `infusion_end` is when the session entered recovery; `earliest` is the first moment the
    time criterion can be met.
    """

    ready: bool
    criteria: tuple[Criterion, ...]
    infusion_end: float | None
    earliest: float | None

    @property
    def open(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if not c.met)

    @property
    def text(self) -> str:
        if self.ready:
            return "Ready for discharge"
        return "Not ready: " + ", ".join(c.label for c in self.open)


TIME_CRITERION, BP_CRITERION, HR_CRITERION, SPO2_CRITERION = MEASURED_CRITERIA

# 0.2 has no exact binary form: a reading exactly 20 % off its baseline must count as within.
_WITHIN_TOLERANCE = 1e-9


def infusion_end(history: Sequence[PhaseChange], now: float) -> float | None:
    """When the session entered recovery (the infusion stop), if it has by `now`."""
    _check_history(history)
    return next((c.since for c in history if c.phase is Phase.RECOVERY and c.since <= now), None)


def discharge_readiness(
    vitals: Iterable[VitalSample],
    history: Sequence[PhaseChange],
    ticks: Collection[str],
    baseline: Baseline | None,
    now: float,
    protocol: Protocol,
    scores: Iterable[ScoreRecord] = (),
) -> Readiness:
    """Whether the patient is ready for discharge at `now`.

    Measured criteria use only usable samples taken after the infusion ended and not after
    `now`: the time since infusion end; the last `bp_readings` readings of each NIBP vital,
    each within the fraction of its baseline or below its limit; the latest heart rate and
    SpO2, which must also be recent. Ticked criteria are the nurse's `ticks` (criterion ids from
    the protocol); a tick a scale confirms stands only when that scale's latest score agrees.
    `baseline` is the session's (the engine's `baseline()`); without one only the absolute
    BP limits apply. The caller may pass only the samples since the infusion ended.
    """
    settings = protocol.workflow.discharge
    unknown = sorted(set(ticks) - set(settings.ticked))
    if unknown:
        raise ValueError(
            f"unknown discharge criteria {unknown}; the protocol's are {list(settings.ticked)}"
        )
    end = infusion_end(history, now)
    earliest = None if end is None else end + settings.after_infusion_end_s
    recent: list[VitalSample] = []
    if end is not None:
        recent = [s for s in vitals if end <= s.time <= now]
    criteria = (
        _time_criterion(end, now, protocol),
        _bp_criterion(recent, end, baseline, protocol),
        _latest_criterion(HR_CRITERION, recent, end, now, protocol),
        _latest_criterion(SPO2_CRITERION, recent, end, now, protocol),
        *_ticked_criteria(ticks, list(scores), now, protocol),
    )
    return Readiness(all(c.met for c in criteria), criteria, end, earliest)


def _time_criterion(end: float | None, now: float, protocol: Protocol) -> Criterion:
    need = protocol.workflow.discharge.after_infusion_end_s
    if end is None:
        return Criterion(TIME_CRITERION, CriterionKind.MEASURED, False, "infusion not ended")
    since = now - end
    met = since >= need
    text = f"{_duration(since)} since infusion end"
    if not met:
        text = f"{_duration(since)} of {_duration(need)} since infusion end"
    return Criterion(TIME_CRITERION, CriterionKind.MEASURED, met, text)


def _bp_criterion(
    recent: list[VitalSample], end: float | None, baseline: Baseline | None, protocol: Protocol
) -> Criterion:
    settings = protocol.workflow.discharge
    n = settings.bp_readings
    if end is None:
        return Criterion(BP_CRITERION, CriterionKind.MEASURED, False, "infusion not ended")
    problems: list[str] = []
    shown: list[str] = []
    for vital, limit, base in (
        (Vital.NIBP_SYS, settings.bp_below.sbp, baseline.sbp if baseline else None),
        (Vital.NIBP_DIA, settings.bp_below.dbp, baseline.dbp if baseline else None),
    ):
        label = VITAL_LABEL[vital]
        readings = usable_samples(recent, (vital,), protocol)[-n:]
        if len(readings) < n:
            problems.append(f"{len(readings)} of {n} {label} readings since infusion end")
            continue
        shown.append(f"{label} {', '.join(number(s.value) for s in readings)}")
        for sample in readings:
            below = sample.value < limit
            within = base is not None and abs(sample.value - base) <= (
                settings.bp_within_fraction * base + _WITHIN_TOLERANCE
            )
            if not (below or within):
                versus = (
                    f"more than {number(settings.bp_within_fraction * 100)} % from "
                    f"baseline {number(base)}"
                    if base is not None
                    else "no baseline"
                )
                problems.append(f"{label} {number(sample.value)} ≥ {number(limit)}, {versus}")
    if problems:
        return Criterion(BP_CRITERION, CriterionKind.MEASURED, False, "; ".join(problems))
    return Criterion(BP_CRITERION, CriterionKind.MEASURED, True, "; ".join(shown))


def _latest_criterion(
    criterion: str, recent: list[VitalSample], end: float | None, now: float, protocol: Protocol
) -> Criterion:
    settings = protocol.workflow.discharge
    if criterion == HR_CRITERION:
        vitals: tuple[Vital, ...] = settings.heart_rate_vitals
        name = " or ".join(VITAL_LABEL[v] for v in vitals)
    else:
        vitals, name = (Vital.SPO2,), VITAL_LABEL[Vital.SPO2]
    if end is None:
        return Criterion(criterion, CriterionKind.MEASURED, False, "infusion not ended")
    usable = usable_samples(recent, vitals, protocol)
    if not usable:
        return Criterion(criterion, CriterionKind.MEASURED, False, f"no {name} since infusion end")
    latest = usable[-1]
    age = now - latest.time
    if age > settings.vitals_max_age_s:
        return Criterion(
            criterion,
            CriterionKind.MEASURED,
            False,
            f"latest {name} is {_duration(age)} old "
            f"(at most {_duration(settings.vitals_max_age_s)})",
        )
    label, value = VITAL_LABEL[latest.vital], latest.value
    if criterion == HR_CRITERION:
        low, high = settings.heart_rate_min, settings.heart_rate_max
        met = low <= value <= high
        text = f"{label} {number(value)}" + (
            "" if met else f" outside {number(low)}–{number(high)}"
        )
    else:
        met = value >= settings.spo2_min
        text = f"{label} {number(value)}" + ("" if met else f" < {number(settings.spo2_min)}")
    return Criterion(criterion, CriterionKind.MEASURED, met, text)


def _ticked_criteria(
    ticks: Collection[str], scores: list[ScoreRecord], now: float, protocol: Protocol
) -> list[Criterion]:
    workflow = protocol.workflow
    confirming = {
        workflow.sedation.confirms: ScoreKind.SEDATION,
        workflow.dissociation.confirms: ScoreKind.DISSOCIATION,
    }
    out = []
    for criterion in workflow.discharge.ticked:
        if criterion not in ticks:
            out.append(Criterion(criterion, CriterionKind.TICKED, False, "not ticked"))
            continue
        kind = confirming.get(criterion)
        latest = None
        if kind is not None:
            for score in scores:  # the latest; of two at one time, the one recorded last
                if (
                    score.kind is kind
                    and score.time <= now
                    and (latest is None or score.time >= latest.time)
                ):
                    latest = score
        if kind is None or latest is None:
            out.append(Criterion(criterion, CriterionKind.TICKED, True, "ticked"))
            continue
        name = scale_name(kind, protocol)
        if kind is ScoreKind.SEDATION:
            bound = workflow.sedation.ready_at_or_above
            agrees, needs = latest.value >= bound, f"≥ {number(bound)}"
        else:
            bound = workflow.dissociation.resolved_at_or_below
            agrees, needs = latest.value <= bound, f"≤ {number(bound)}"
        text = f"ticked; latest {name} {number(latest.value)}"
        if not agrees:
            text = f"ticked, but the latest {name} is {number(latest.value)} (needs {needs})"
        out.append(Criterion(criterion, CriterionKind.TICKED, agrees, text))
    return out
