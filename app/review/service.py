"""Session review: the stored session turned into summary figures, a trace, an alarm log.

Each function takes an open SQLAlchemy session, so the API runs it on the database executor
and the dashboard's source calls it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.auth import repository as auth_repository
from app.errors import FieldProblem, InvalidRequest
from app.events import AlarmOut
from app.review import repository
from app.review.figures import (
    NIBP_VITALS,
    SUMMARY_VITALS,
    AlarmFacts,
    FloatArray,
    LimitSpec,
    SiteFigures,
    VitalSeries,
    downsample_min_max,
    session_figures,
    site_figures,
)
from app.storage.models import AnnotationKind
from contracts.review import (
    AlarmLogEntry,
    AlarmSpan,
    AnnotationRequest,
    AnnotationView,
    EventMarker,
    LimitMinutes,
    PatientSessionRow,
    PhaseSpan,
    RateStep,
    SessionReview,
    SessionSummary,
    SessionTrace,
    TraceSeries,
    VitalSummary,
)
from monitor.protocol import VITAL_LABEL, Op, Phase, Protocol

LABELS = {vital.value: label for vital, label in VITAL_LABEL.items()}
UNITS = {"hr": "/min", "pr": "/min", "spo2": "%", "pi": "%"} | dict.fromkeys(NIBP_VITALS, "mmHg")
TRACE_VITALS = ("hr", "pr", "spo2", "nibp_sys", "nibp_dia", "nibp_mean")
_PHASE_OF_EVENT = {
    "check_in": Phase.CHECKED_IN,
    "baseline_start": Phase.BASELINE,
    "infusion_start": Phase.INFUSION,
    "infusion_stop": Phase.RECOVERY,
}


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _moments(epochs: FloatArray) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), UTC) for t in epochs]


@dataclass(frozen=True)
class _Loaded:
    head: repository.SessionHead
    series: dict[str, VitalSeries]
    events: list[repository.EventRow]
    alarms: list[AlarmOut]
    baselines: dict[str, float]
    notes: list[AnnotationView]
    overrides: list[repository.OverrideRow]

    @property
    def end(self) -> datetime:
        """The session's end: discharge, or for an open session its latest record."""
        if self.head.ended_at is not None:
            return self.head.ended_at
        latest = [self.head.started_at, *(e.at for e in self.events)]
        latest += [
            _moment(float(s.times[-1])) or self.head.started_at for s in self.series.values()
        ]
        return max(latest)


def _load(session: Session, session_id: int, samples_under: Protocol | None) -> _Loaded:
    """The stored session; its samples only with `samples_under`, the protocol that says
    which of them are usable."""
    head = repository.session_head(session, session_id)
    return _Loaded(
        head,
        {}
        if samples_under is None
        else repository.session_series(session, session_id, samples_under),
        repository.session_events(session, session_id),
        repository.session_alarms(session, session_id),
        repository.stored_baselines(session, session_id),
        repository.list_annotations(session, session_id),
        repository.limit_overrides(session, session_id),
    )


def phase_spans(
    head: repository.SessionHead, events: list[repository.EventRow], end: datetime
) -> list[PhaseSpan]:
    """Each phase from the event that began it to the next one (or the session's end)."""
    starts: list[tuple[str, datetime]] = [(Phase.CHECKED_IN.value, head.started_at)]
    for event in events:
        phase = _PHASE_OF_EVENT.get(event.kind)
        if phase is not None and phase != starts[-1][0]:
            starts.append((phase.value, max(event.at, starts[-1][1])))
    bounds = [moment for _, moment in starts[1:]] + [end]
    return [
        PhaseSpan(phase, start, stop) for (phase, start), stop in zip(starts, bounds, strict=True)
    ]


def _baseline_window(phases: list[PhaseSpan]) -> tuple[float, float] | None:
    for span in phases:
        if span.phase == Phase.BASELINE:
            return span.start.timestamp(), span.end.timestamp()
    return None


def rate_steps(events: list[repository.EventRow], end: datetime) -> list[RateStep]:
    """The infusion rate over time, from the recorded events, with the cumulative dose."""
    steps: list[RateStep] = []
    rate: float | None = None
    unit: str | None = None
    paused_rate: float | None = None
    since: datetime | None = None
    dose: float | None = 0.0

    def close(until: datetime) -> None:
        nonlocal dose
        if since is None:
            return
        if dose is not None and rate is not None and (unit in (None, "mg/kg/h")):
            dose += rate * (until - since).total_seconds() / 3600.0
        else:
            dose = None  # an unknown rate or unit leaves the dose unknown from here on
        steps.append(RateStep(since, until, rate, unit, dose))

    for event in events:
        if event.kind == "infusion_start":
            rate, unit = event.value, event.unit or ("mg/kg/h" if event.value is not None else None)
        elif event.kind == "rate_change" and since is not None:
            close(event.at)
            rate, unit = event.value, event.unit or unit
        elif event.kind == "infusion_pause" and since is not None:
            close(event.at)
            paused_rate, rate = rate, 0.0
        elif event.kind == "infusion_resume" and since is not None:
            close(event.at)
            rate = paused_rate
        elif event.kind == "infusion_stop" and since is not None:
            close(event.at)
            since = None
            continue
        else:
            continue
        since = event.at
    if since is not None:
        close(max(end, since))
    return steps


def protocol_limits(
    protocol: Protocol,
    baselines: dict[str, float | None],
    overrides: list[repository.OverrideRow],
) -> list[LimitSpec]:
    """The protocol's physiological limits on the summary vitals, one per distinct condition,
    each with the session's overrides of it: time beyond a limit is counted against the
    limit in force at that moment, as the alarms were.

    Baseline-relative limits count only when the session has a baseline for that vital.
    """
    limits: list[LimitSpec] = []
    seen: set[tuple[str, Op, float, tuple[tuple[float, float], ...]]] = set()
    for rule in protocol.rules:
        vital = rule.vital.value
        if vital not in SUMMARY_VITALS:
            continue
        offset = 0.0
        if rule.relative_to_baseline:
            baseline = baselines.get(vital)
            if baseline is None:
                continue
            offset = baseline
        changes = tuple(
            (o.at.timestamp(), offset + o.new_value) for o in overrides if o.rule_id == rule.id
        )
        key = (vital, rule.op, offset + rule.limit, changes)
        if key in seen:
            continue
        seen.add(key)
        limits.append(
            LimitSpec(rule.id, vital, rule.op, offset + rule.limit, rule.priority.value, changes)
        )
    return limits


def _condition(limit: LimitSpec, started_at: datetime) -> str:
    """The condition as a clinician reads it: "SBP ≥ 160, 170 from minute 12" when this
    session overrode the limit at its twelfth minute."""
    text = f"{LABELS[limit.vital]} {limit.op.symbol} {limit.limit:g}"
    for since, value in limit.changes:
        minute = max(0.0, (since - started_at.timestamp()) / 60.0)
        text += f", {value:g} from minute {minute:.0f}"
    return text


def _alarm_facts(alarms: list[AlarmOut], marks: dict[str, AnnotationView]) -> list[AlarmFacts]:
    return [
        AlarmFacts(
            a.rule_id,
            a.priority,
            a.raised_at.timestamp(),
            a.acknowledged_at.timestamp() if a.acknowledged_at else None,
            marks[a.alarm_id].actionable if a.alarm_id in marks else None,
        )
        for a in alarms
    ]


def _summary(loaded: _Loaded, protocol: Protocol) -> SessionSummary:
    head, end = loaded.head, loaded.end
    phases = phase_spans(head, loaded.events, end)
    window = _baseline_window(phases)
    marks = repository.latest_marks(loaded.notes)
    first = session_figures(
        loaded.series,
        session_end=end.timestamp(),
        baseline_window=window,
        stored_baselines=loaded.baselines,
        limits=[],
        alarms=_alarm_facts(loaded.alarms, marks),
        protocol=protocol,
    )
    baselines = {v.vital: v.baseline for v in first.vitals}
    limits = protocol_limits(protocol, baselines, loaded.overrides)
    figures = session_figures(
        loaded.series,
        session_end=end.timestamp(),
        baseline_window=window,
        stored_baselines=loaded.baselines,
        limits=limits,
        alarms=_alarm_facts(loaded.alarms, marks),
        protocol=protocol,
    )
    steps = rate_steps(loaded.events, end)
    return SessionSummary(
        session_id=head.session_id,
        site_id=head.site_id,
        site_name=head.site_name,
        chair_id=head.chair_id,
        chair_name=head.chair_name,
        patient_id=head.patient_id,
        patient_pseudonym=head.patient_pseudonym,
        patient_initials=head.patient_initials,
        phase=head.phase,
        started_at=head.started_at,
        ended_at=head.ended_at,
        duration_min=(end - head.started_at).total_seconds() / 60.0,
        total_dose_mg_per_kg=steps[-1].dose_at_end if steps else None,
        vitals=[
            VitalSummary(
                v.vital,
                LABELS[v.vital],
                UNITS[v.vital],
                v.baseline,
                v.peak,
                _moment(v.peak_at),
                v.lowest,
                _moment(v.lowest_at),
                v.usable_samples,
            )
            for v in figures.vitals
        ],
        beyond_limits=[
            LimitMinutes(
                b.limit.rule_id,
                b.limit.vital,
                _condition(b.limit, head.started_at),
                b.limit.priority,
                b.minutes,
            )
            for b in figures.beyond_limits
        ],
        lowest_spo2=figures.lowest_spo2,
        lowest_spo2_at=_moment(figures.lowest_spo2_at),
        seconds_spo2_below_90=figures.seconds_spo2_below_90,
        alarm_counts=figures.alarm_counts,
        alarms_total=len(loaded.alarms),
        acknowledged=figures.acknowledged,
        median_ack_s=figures.median_ack_s,
        notes=[n for n in loaded.notes if n.kind == AnnotationKind.NOTE.value],
    )


def summary(session: Session, session_id: int, protocol: Protocol) -> SessionSummary:
    """The session's summary figures (see docs/REVIEW.md for each definition)."""
    return _summary(_load(session, session_id, protocol), protocol)


def _alarm_log(loaded: _Loaded) -> list[AlarmLogEntry]:
    marks = repository.latest_marks(loaded.notes)
    entries = []
    for a in loaded.alarms:
        mark = marks.get(a.alarm_id)
        entries.append(
            AlarmLogEntry(
                a.alarm_id,
                a.rule_id,
                a.kind,
                a.priority,
                a.text,
                a.value,
                a.limit,
                a.state,
                a.raised_at,
                a.acknowledged_at,
                a.acknowledged_by,
                a.cleared_at,
                (a.acknowledged_at - a.raised_at).total_seconds() if a.acknowledged_at else None,
                mark.actionable if mark else None,
                mark.author if mark else None,
                mark.at if mark else None,
            )
        )
    return entries


def alarm_log(session: Session, session_id: int) -> list[AlarmLogEntry]:
    """Every alarm of the session, oldest first, with its latest actionable mark."""
    return _alarm_log(_load(session, session_id, None))


def _trace(loaded: _Loaded, max_points: int) -> SessionTrace:
    head, end = loaded.head, loaded.end
    columns = max(1, max_points // 2)
    series: list[TraceSeries] = []
    for vital in TRACE_VITALS:
        one = loaded.series.get(vital)
        if one is None:
            continue
        good_t, good_v = downsample_min_max(one.times[one.usable], one.values[one.usable], columns)
        bad_t, bad_v = downsample_min_max(one.times[~one.usable], one.values[~one.usable], columns)
        series.append(
            TraceSeries(
                vital,
                LABELS[vital],
                UNITS[vital],
                _moments(good_t),
                good_v.tolist(),
                _moments(bad_t),
                bad_v.tolist(),
                int(one.times.size),
            )
        )
    events = [
        EventMarker(
            e.at,
            e.kind,
            " ".join(
                part
                for part in (
                    e.kind.replace("_", " "),
                    f"{e.value:g} {e.unit or ''}".strip() if e.value is not None else "",
                    e.note or "",
                )
                if part
            ),
            e.recorded_by,
        )
        for e in loaded.events
    ]
    return SessionTrace(
        session_id=head.session_id,
        site_id=head.site_id,
        start=head.started_at,
        end=end,
        series=series,
        phases=phase_spans(head, loaded.events, end),
        rates=rate_steps(loaded.events, end),
        alarms=[
            AlarmSpan(
                a.alarm_id,
                a.rule_id,
                a.priority,
                a.text,
                a.raised_at,
                a.cleared_at or max(end, a.raised_at),
                a.acknowledged_at,
            )
            for a in loaded.alarms
        ],
        events=events,
    )


def trace(session: Session, session_id: int, protocol: Protocol, max_points: int) -> SessionTrace:
    """The session for plotting: at most about `max_points` points per vital, the samples the
    protocol does not trust apart."""
    return _trace(_load(session, session_id, protocol), max_points)


def review(session: Session, session_id: int, protocol: Protocol, max_points: int) -> SessionReview:
    """Figures, trace and alarm log from one read of the session: its page and its report."""
    loaded = _load(session, session_id, protocol)
    return SessionReview(_summary(loaded, protocol), _trace(loaded, max_points), _alarm_log(loaded))


def patient_sessions(
    session: Session, patient_id: int, protocol: Protocol
) -> list[PatientSessionRow]:
    """A patient's course, oldest first: baseline and peak blood pressure per session."""
    repository.require_patient(session, patient_id)
    rows = []
    for session_id in repository.patient_session_ids(session, patient_id):
        loaded = _load(session, session_id, protocol)
        phases = phase_spans(loaded.head, loaded.events, loaded.end)
        figures = session_figures(
            loaded.series,
            session_end=loaded.end.timestamp(),
            baseline_window=_baseline_window(phases),
            stored_baselines=loaded.baselines,
            limits=[],
            alarms=_alarm_facts(loaded.alarms, {}),
            protocol=protocol,
        )
        by_vital = {v.vital: v for v in figures.vitals}
        rows.append(
            PatientSessionRow(
                session_id=session_id,
                site_id=loaded.head.site_id,
                chair_name=loaded.head.chair_name,
                started_at=loaded.head.started_at,
                ended_at=loaded.head.ended_at,
                baseline_sys=by_vital["nibp_sys"].baseline,
                baseline_dia=by_vital["nibp_dia"].baseline,
                peak_sys=by_vital["nibp_sys"].peak,
                peak_sys_at=_moment(by_vital["nibp_sys"].peak_at),
                peak_dia=by_vital["nibp_dia"].peak,
                peak_hr=by_vital["hr"].peak,
                lowest_spo2=figures.lowest_spo2,
                alarms=len(loaded.alarms),
                high_priority_alarms=sum(
                    a.priority in repository.HIGH_PRIORITIES for a in loaded.alarms
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class SiteFiguresOut:
    site_id: int
    site_name: str
    start: datetime
    end: datetime
    figures: SiteFigures


def site_review(session: Session, site_id: int, start: datetime, end: datetime) -> SiteFiguresOut:
    """A site's alarm load over [start, end): what a medical director tunes limits with."""
    name = repository.require_site(session, site_id)
    spans = [
        (s.timestamp(), (e or end).timestamp())
        for s, e in repository.site_sessions(session, site_id, start, end)
    ]
    alarms = [
        AlarmFacts(
            a.rule_id,
            a.priority,
            a.raised_at.timestamp(),
            a.acknowledged_at.timestamp() if a.acknowledged_at else None,
            a.actionable,
        )
        for a in repository.site_alarms(session, site_id, start, end)
    ]
    return SiteFiguresOut(
        site_id, name, start, end, site_figures(alarms, spans, start.timestamp(), end.timestamp())
    )


def default_range(now: datetime) -> tuple[datetime, datetime]:
    """The last 30 days, ending now."""
    return now - timedelta(days=30), now


def annotate(
    session: Session, session_id: int, request: AnnotationRequest, now: datetime
) -> AnnotationView:
    """Append a note or an alarm mark; a changed mark is a new row, the latest one counts."""
    auth_repository.site_of_session(session, session_id)  # unknown session: 404
    note = (request.note or "").strip() or None
    if request.alarm_id is None:
        if request.actionable is not None:
            raise InvalidRequest(
                [FieldProblem(("body", "alarm_id"), "marking actionable needs the alarm's id")]
            )
        if note is None:
            raise InvalidRequest(
                [FieldProblem(("body", "note"), "give a note, or an alarm_id with actionable")]
            )
        kind = AnnotationKind.NOTE
    else:
        owner = repository.alarm_session(session, request.alarm_id)
        if owner != session_id:
            raise InvalidRequest(
                [
                    FieldProblem(
                        ("body", "alarm_id"),
                        f"alarm {request.alarm_id!r} is not an alarm of session {session_id}",
                    )
                ]
            )
        if request.actionable is None:
            raise InvalidRequest(
                [FieldProblem(("body", "actionable"), "say whether the alarm was actionable")]
            )
        kind = AnnotationKind.ALARM_MARK
    return repository.add_annotation(
        session,
        session_id,
        kind=kind,
        author=request.author,
        at=now,
        text=note,
        alarm_id=request.alarm_id,
        actionable=request.actionable,
    )
