"""Reading stored sessions for review, and appending annotations. Plain SQL, one query per
kind of row; the figures themselves are computed in app/review/figures.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Float, Select, and_, case, cast, extract, func, select
from sqlalchemy.orm import Session

from app.alarms.repository import alarm_out
from app.errors import NotFoundError
from app.events import AlarmOut
from app.review.figures import FloatArray, VitalSeries
from app.storage.models import (
    Alarm,
    AnnotationKind,
    Chair,
    InfusionSession,
    LimitOverrideRecord,
    Patient,
    ReviewAnnotation,
    Sample,
    SessionBaseline,
    SessionEvent,
    Site,
)
from contracts.review import (
    AnnotationView,
    SessionListItem,
    SessionListQuery,
    SessionPage,
    SiteOption,
)
from monitor.conditions import sample_usable, untrusted_mask
from monitor.display import HIGH_LEVEL_PRIORITIES
from monitor.protocol import Protocol
from monitor.vitals import Vital

HIGH_PRIORITIES = tuple(priority.value for priority in HIGH_LEVEL_PRIORITIES)
JULIAN_DAY_OF_1970 = 2440587.5  # 1970-01-01T00:00:00Z as a Julian day number


@dataclass(frozen=True)
class SessionHead:
    """Who, where and when of one session."""

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


@dataclass(frozen=True)
class EventRow:
    kind: str
    at: datetime
    recorded_by: str
    value: float | None
    unit: str | None
    note: str | None


def sites(session: Session) -> list[SiteOption]:
    return [
        SiteOption(i, n) for i, n in session.execute(select(Site.id, Site.name).order_by(Site.name))
    ]


def require_site(session: Session, site_id: int) -> str:
    name = session.scalar(select(Site.name).where(Site.id == site_id))
    if name is None:
        raise NotFoundError(f"unknown site {site_id}")
    return name


def require_patient(session: Session, patient_id: int) -> None:
    if session.get(Patient, patient_id) is None:
        raise NotFoundError(f"unknown patient {patient_id}")


def list_sessions(session: Session, query: SessionListQuery) -> SessionPage:
    """Sessions matching every given filter, newest first, one page of them."""
    counts = (
        select(
            Alarm.session_id,
            func.count().label("alarms"),
            func.sum(case((Alarm.priority.in_(HIGH_PRIORITIES), 1), else_=0)).label("high"),
        )
        .group_by(Alarm.session_id)
        .subquery()
    )
    conditions = []
    if query.site_id is not None:
        conditions.append(Chair.site_id == query.site_id)
    if query.site_ids is not None:
        conditions.append(Chair.site_id.in_(sorted(query.site_ids)))
    if query.chair_id is not None:
        conditions.append(InfusionSession.chair_id == query.chair_id)
    if query.patient is not None:
        conditions.append(Patient.pseudonym == query.patient)
    if query.start is not None:
        conditions.append(InfusionSession.started_at >= query.start)
    if query.end is not None:
        conditions.append(InfusionSession.started_at < query.end)
    if query.high_alarm is True:
        conditions.append(func.coalesce(counts.c.high, 0) > 0)
    elif query.high_alarm is False:
        conditions.append(func.coalesce(counts.c.high, 0) == 0)
    base = (
        _with_head(func.coalesce(counts.c.alarms, 0), func.coalesce(counts.c.high, 0))
        .outerjoin(counts, counts.c.session_id == InfusionSession.id)
        .where(and_(True, *conditions))
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(InfusionSession.started_at.desc(), InfusionSession.id.desc())
        .limit(query.page_size)
        .offset((query.page - 1) * query.page_size)
    )
    items = [
        SessionListItem(
            sid,
            site,
            site_name,
            chair,
            chair_name,
            pid,
            pseud,
            initials,
            str(phase.value),
            started,
            ended,
            int(alarms),
            int(high),
        )
        for (
            sid,
            site,
            site_name,
            chair,
            chair_name,
            pid,
            pseud,
            initials,
            phase,
            started,
            ended,
            alarms,
            high,
        ) in rows
    ]
    return SessionPage(items, int(total), query.page, query.page_size)


def _with_head(*extra: Any) -> Select[*tuple[Any, ...]]:
    """A session with its site, chair and patient (the columns of `SessionHead`), plus
    `extra` columns: what the session list and a single session both start from."""
    return (
        select(
            InfusionSession.id,
            Chair.site_id,
            Site.name,
            Chair.id,
            Chair.name,
            Patient.id,
            Patient.pseudonym,
            Patient.initials,
            InfusionSession.phase,
            InfusionSession.started_at,
            InfusionSession.ended_at,
            *extra,
        )
        .join(Chair, InfusionSession.chair_id == Chair.id)
        .join(Site, Chair.site_id == Site.id)
        .join(Patient, InfusionSession.patient_id == Patient.id)
    )


def session_head(session: Session, session_id: int) -> SessionHead:
    row = session.execute(_with_head().where(InfusionSession.id == session_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"unknown session {session_id}")
    sid, site, site_name, chair, chair_name, pid, pseud, initials, phase, started, ended = row
    return SessionHead(
        sid,
        site,
        site_name,
        chair,
        chair_name,
        pid,
        pseud,
        initials,
        str(phase.value),
        started,
        ended,
    )


def epoch_seconds(column: Any, dialect: str) -> ColumnElement[float]:
    """Seconds since 1970, computed by the database: no datetime object is built per row,
    which is most of the cost of reading a long session."""
    if dialect == "sqlite":
        # Stored as naive UTC text; julianday keeps well under a millisecond of precision.
        return (func.julianday(column) - JULIAN_DAY_OF_1970) * 86400.0
    return cast(extract("epoch", column), Float)


def session_series(session: Session, session_id: int, protocol: Protocol) -> dict[str, VitalSeries]:
    """Every sample of the session as numpy arrays per vital, in device-time order, each
    marked usable or not by the alarm engine's predicate under the clinic's protocol."""
    dialect = session.get_bind().dialect.name
    rows = session.execute(
        select(
            Sample.vital,
            epoch_seconds(Sample.device_time, dialect),
            Sample.value,
            Sample.quality,
        )
        .where(Sample.session_id == session_id)
        .order_by(Sample.vital, Sample.device_time, Sample.id)
    ).all()
    if not rows:
        return {}
    vitals, times, values, qualities = zip(*rows, strict=True)
    names = np.asarray(vitals)
    epochs: FloatArray = np.asarray(times, dtype=np.float64).round(3)  # device times carry ms
    numbers = np.asarray(values, dtype=np.float64)
    flags = np.asarray(qualities, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])  # rows come grouped by vital
    ends = np.r_[starts[1:], len(rows)]
    series = {}
    for a, b in zip(starts, ends, strict=True):
        vital = Vital(str(names[a]))
        usable = sample_usable(numbers[a:b], flags[a:b], untrusted_mask(protocol, vital))
        series[vital.value] = VitalSeries(vital.value, epochs[a:b], numbers[a:b], usable)
    return series


def session_events(session: Session, session_id: int) -> list[EventRow]:
    return [
        EventRow(str(e.kind.value), e.at, e.recorded_by, e.value, e.unit, e.note)
        for e in session.scalars(
            select(SessionEvent)
            .where(SessionEvent.session_id == session_id)
            .order_by(SessionEvent.at, SessionEvent.id)
        )
    ]


def session_alarms(session: Session, session_id: int) -> list[AlarmOut]:
    """The session's alarms as stored (the one alarm record), oldest first."""
    return [
        alarm_out(a)
        for a in session.scalars(
            select(Alarm).where(Alarm.session_id == session_id).order_by(Alarm.raised_at, Alarm.id)
        )
    ]


@dataclass(frozen=True)
class OverrideRow:
    rule_id: str
    at: datetime
    new_value: float  # an offset from the baseline for a baseline-relative rule


def limit_overrides(session: Session, session_id: int) -> list[OverrideRow]:
    """The session's limit changes (reverts included), oldest first."""
    return [
        OverrideRow(rule_id, at, new_value)
        for rule_id, at, new_value in session.execute(
            select(
                LimitOverrideRecord.rule_id, LimitOverrideRecord.at, LimitOverrideRecord.new_value
            )
            .where(LimitOverrideRecord.session_id == session_id)
            .order_by(LimitOverrideRecord.at, LimitOverrideRecord.id)
        )
    ]


def stored_baselines(session: Session, session_id: int) -> dict[str, float]:
    return {
        vital: value
        for vital, value in session.execute(
            select(SessionBaseline.vital, SessionBaseline.value).where(
                SessionBaseline.session_id == session_id
            )
        )
    }


def _annotation_view(row: ReviewAnnotation) -> AnnotationView:
    return AnnotationView(
        row.id,
        row.session_id,
        str(row.kind.value),
        row.alarm_id,
        row.actionable,
        row.text,
        row.author,
        row.at,
    )


def list_annotations(session: Session, session_id: int) -> list[AnnotationView]:
    """Every annotation of the session, oldest first."""
    return [
        _annotation_view(row)
        for row in session.scalars(
            select(ReviewAnnotation)
            .where(ReviewAnnotation.session_id == session_id)
            .order_by(ReviewAnnotation.at, ReviewAnnotation.id)
        )
    ]


def latest_marks(annotations_oldest_first: list[AnnotationView]) -> dict[str, AnnotationView]:
    """The mark that counts for each alarm: its latest."""
    marks: dict[str, AnnotationView] = {}
    for note in annotations_oldest_first:
        if note.kind == AnnotationKind.ALARM_MARK.value and note.alarm_id is not None:
            marks[note.alarm_id] = note
    return marks


def alarm_session(session: Session, alarm_id: str) -> int | None:
    return session.scalar(select(Alarm.session_id).where(Alarm.id == alarm_id))


def add_annotation(
    session: Session,
    session_id: int,
    *,
    kind: AnnotationKind,
    author: str,
    at: datetime,
    text: str | None,
    alarm_id: str | None,
    actionable: bool | None,
) -> AnnotationView:
    row = ReviewAnnotation(
        session_id=session_id,
        kind=kind,
        alarm_id=alarm_id,
        actionable=actionable,
        text=text,
        author=author,
        at=at,
    )
    session.add(row)
    session.commit()
    return _annotation_view(row)


def patient_session_ids(session: Session, patient_id: int) -> list[int]:
    """A patient's sessions, oldest first: a course of infusions in the order given."""
    return list(
        session.scalars(
            select(InfusionSession.id)
            .where(InfusionSession.patient_id == patient_id)
            .order_by(InfusionSession.started_at, InfusionSession.id)
        )
    )


@dataclass(frozen=True)
class SiteAlarmRow:
    rule_id: str
    priority: str
    raised_at: datetime
    acknowledged_at: datetime | None
    actionable: bool | None


def site_sessions(
    session: Session, site_id: int, start: datetime, end: datetime
) -> list[tuple[datetime, datetime | None]]:
    """(start, end) of every session of the site that overlaps [start, end)."""
    rows = session.execute(
        select(InfusionSession.started_at, InfusionSession.ended_at)
        .join(Chair, InfusionSession.chair_id == Chair.id)
        .where(
            Chair.site_id == site_id,
            InfusionSession.started_at < end,
            (InfusionSession.ended_at.is_(None)) | (InfusionSession.ended_at > start),
        )
    )
    return [(s, e) for s, e in rows]


def site_alarms(
    session: Session, site_id: int, start: datetime, end: datetime
) -> list[SiteAlarmRow]:
    """Alarms raised at the site's chairs in [start, end), each with its latest mark."""
    # One index lookup per alarm (alarm_id, at): no plan that depends on table statistics.
    latest_mark = (
        select(ReviewAnnotation.actionable)
        .where(
            ReviewAnnotation.alarm_id == Alarm.id,
            ReviewAnnotation.kind == AnnotationKind.ALARM_MARK,
        )
        .order_by(ReviewAnnotation.at.desc(), ReviewAnnotation.id.desc())
        .limit(1)
        .correlate(Alarm)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Alarm.rule_id,
            Alarm.priority,
            Alarm.raised_at,
            Alarm.acknowledged_at,
            latest_mark,
        )
        .join(Chair, Alarm.chair_id == Chair.id)
        .where(Chair.site_id == site_id, Alarm.raised_at >= start, Alarm.raised_at < end)
    )
    return [SiteAlarmRow(*row) for row in rows]
