"""Stored sessions for review: the `ReviewSource` Protocol and the shapes it answers with.

The server implements `ReviewSource` (`app.review.source.DatabaseReviewSource`, scoped to
the signed-in person by `app.auth.dash_scope`); the composition root (`vigil.server`) hands
it to the dashboard's review pages, which never touch the database themselves. The review
API (`app.review.endpoints`) answers with the same dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class ReviewNotFound(LookupError):
    """The session (or alarm) asked for does not exist."""


class ReviewRefused(ValueError):
    """A request the server will not carry out; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SiteOption:
    site_id: int
    name: str


@dataclass(frozen=True)
class SessionListQuery:
    site_id: int | None = None
    site_ids: frozenset[int] | None = None  # only these sites (who may see what); None: all
    chair_id: int | None = None
    patient: str | None = None  # the patient's pseudonym
    start: datetime | None = None  # sessions started at or after
    end: datetime | None = None  # sessions started before
    high_alarm: bool | None = None  # True: only sessions with a high or crisis alarm
    page: int = 1
    page_size: int = 50


@dataclass(frozen=True)
class SessionListItem:
    session_id: int
    site_id: int
    site_name: str
    chair_id: int
    chair_name: str
    patient_id: int
    patient_pseudonym: str
    patient_initials: str
    phase: str
    started_at: datetime
    ended_at: datetime | None
    alarms: int
    high_priority_alarms: int


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionListItem]
    total: int
    page: int
    page_size: int


@dataclass(frozen=True)
class VitalSummary:
    vital: str
    label: str
    unit: str
    baseline: float | None
    peak: float | None
    peak_at: datetime | None
    lowest: float | None
    lowest_at: datetime | None
    usable_samples: int


@dataclass(frozen=True)
class LimitMinutes:
    rule_id: str
    vital: str
    condition: str  # e.g. "SpO2 ≤ 90"
    priority: str
    minutes: float


@dataclass(frozen=True)
class AnnotationView:
    id: int
    session_id: int
    kind: str  # note | alarm_mark
    alarm_id: str | None
    actionable: bool | None
    text: str | None
    author: str
    at: datetime


@dataclass(frozen=True)
class SessionSummary:
    session_id: int
    site_id: int
    site_name: str
    chair_id: int
    chair_name: str
    patient_id: int
    patient_pseudonym: str
    patient_initials: str
    phase: str
    started_at: datetime
    ended_at: datetime | None
    duration_min: float
    total_dose_mg_per_kg: float | None
    vitals: list[VitalSummary]
    beyond_limits: list[LimitMinutes]
    lowest_spo2: float | None
    lowest_spo2_at: datetime | None
    seconds_spo2_below_90: float
    alarm_counts: dict[str, int]
    alarms_total: int
    acknowledged: int
    median_ack_s: float | None
    notes: list[AnnotationView] = field(default_factory=list)


@dataclass(frozen=True)
class PatientSessionRow:
    """One session of a patient's course: baseline and peak blood pressure side by side."""

    session_id: int
    site_id: int
    chair_name: str
    started_at: datetime
    ended_at: datetime | None
    baseline_sys: float | None
    baseline_dia: float | None
    peak_sys: float | None
    peak_sys_at: datetime | None
    peak_dia: float | None
    peak_hr: float | None
    lowest_spo2: float | None
    alarms: int
    high_priority_alarms: int


@dataclass(frozen=True)
class AlarmLogEntry:
    alarm_id: str
    rule_id: str
    kind: str
    priority: str
    text: str
    value: float | None
    limit: float | None
    state: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    time_to_ack_s: float | None
    actionable: bool | None  # the latest mark; None when nobody has marked it
    marked_by: str | None
    marked_at: datetime | None


@dataclass(frozen=True)
class TraceSeries:
    """One vital for display: usable samples (down-sampled), flagged ones apart."""

    vital: str
    label: str
    unit: str
    times: list[datetime]
    values: list[float]
    flagged_times: list[datetime]
    flagged_values: list[float]
    stored_samples: int


@dataclass(frozen=True)
class PhaseSpan:
    phase: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class RateStep:
    """The infusion rate from `start` to `end`; 0 while paused; None when not recorded."""

    start: datetime
    end: datetime
    rate: float | None
    unit: str | None
    dose_at_end: float | None  # cumulative mg/kg at `end`


@dataclass(frozen=True)
class AlarmSpan:
    alarm_id: str
    rule_id: str
    priority: str
    text: str
    start: datetime
    end: datetime
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class EventMarker:
    at: datetime
    kind: str
    label: str
    recorded_by: str


@dataclass(frozen=True)
class SessionTrace:
    session_id: int
    site_id: int
    start: datetime
    end: datetime
    series: list[TraceSeries]
    phases: list[PhaseSpan]
    rates: list[RateStep]
    alarms: list[AlarmSpan]
    events: list[EventMarker]


@dataclass(frozen=True)
class SessionReview:
    """One session's page (or report): figures, trace and alarm log, loaded together."""

    summary: SessionSummary
    trace: SessionTrace
    alarm_log: list[AlarmLogEntry]


@dataclass(frozen=True)
class AnnotationRequest:
    author: str
    note: str | None = None
    alarm_id: str | None = None
    actionable: bool | None = None


class ReviewSource(Protocol):
    """Read and annotate stored sessions. Unknown ids raise `ReviewNotFound`, refused
    annotations `ReviewRefused`."""

    def sites(self) -> list[SiteOption]: ...

    def sessions(self, query: SessionListQuery) -> SessionPage: ...

    def summary(self, session_id: int) -> SessionSummary: ...

    def trace(self, session_id: int, max_points: int) -> SessionTrace: ...

    def review(self, session_id: int, max_points: int) -> SessionReview: ...

    def patient_sessions(self, patient_id: int) -> list[PatientSessionRow]: ...

    def alarm_log(self, session_id: int) -> list[AlarmLogEntry]: ...

    def annotate(self, session_id: int, request: AnnotationRequest) -> AnnotationView: ...
