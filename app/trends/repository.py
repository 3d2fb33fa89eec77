"""Reads for the chair view and the sparklines: samples, alarms and events in a time window."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.alarms.repository import alarm_out
from app.errors import NotFoundError
from app.events import AlarmOut
from app.sessions.schemas import EventOut
from app.storage.models import (
    Alarm,
    AlarmTransitionRecord,
    Chair,
    InfusionSession,
    Sample,
    SessionEvent,
)
from app.trends.schemas import ChairSparklines, Series

SPARKLINE_VITALS = ("hr", "pr", "spo2")


def open_session(session: Session, session_id: int) -> InfusionSession:
    found = session.get(InfusionSession, session_id)
    if found is None:
        raise NotFoundError(f"no session {session_id}")
    return found


def session_series(session: Session, session_id: int, since: datetime) -> dict[str, Series]:
    """Every unflagged sample of the session since `since`, by vital, in receipt order."""
    series: dict[str, Series] = {}
    rows = session.execute(
        select(Sample.vital, Sample.received_time, Sample.value)
        .where(
            Sample.session_id == session_id,
            Sample.received_time >= since,
            Sample.quality == 0,  # artifacts and probe-off values would draw false dips
        )
        .order_by(Sample.received_time, Sample.device_time)
    )
    for vital, received, value in rows:
        line = series.setdefault(vital, Series(t=[], v=[]))
        line.t.append(received)
        line.v.append(value)
    return series


def session_alarms(session: Session, session_id: int, since: datetime) -> list[AlarmOut]:
    """Alarms of the session raised in the window or still live, oldest first."""
    rows = session.scalars(
        select(Alarm)
        .where(
            Alarm.session_id == session_id,
            (Alarm.raised_at >= since) | (Alarm.state != "cleared"),
        )
        .order_by(Alarm.raised_at)
    )
    return [alarm_out(row) for row in rows]


def session_events(session: Session, session_id: int, since: datetime) -> list[EventOut]:
    rows = session.scalars(
        select(SessionEvent)
        .where(SessionEvent.session_id == session_id, SessionEvent.at >= since)
        .order_by(SessionEvent.at, SessionEvent.id)
    )
    return [
        EventOut(
            id=row.id,
            kind=row.kind,
            at=row.at,
            recorded_by=row.recorded_by,
            recorded_at=row.recorded_at,
            value=row.value,
            unit=row.unit,
            note=row.note,
        )
        for row in rows
    ]


def site_sparklines(
    session: Session, site_id: int, since: datetime, bucket_s: float
) -> list[ChairSparklines]:
    """Bucket means of HR, PR and SpO2 for every open session of the site."""
    open_sessions: dict[int, int] = {
        session_id: chair_id
        for session_id, chair_id in session.execute(
            select(InfusionSession.id, InfusionSession.chair_id)
            .join(Chair, InfusionSession.chair_id == Chair.id)
            .where(Chair.site_id == site_id, InfusionSession.ended_at.is_(None))
        )
    }
    if not open_sessions:
        return []
    # (session, vital, bucket) -> [sum, count]
    sums: dict[tuple[int, str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    rows = session.execute(
        select(Sample.session_id, Sample.vital, Sample.received_time, Sample.value).where(
            Sample.session_id.in_(open_sessions),
            Sample.vital.in_(SPARKLINE_VITALS),
            Sample.received_time >= since,
            Sample.quality == 0,
        )
    )
    start = since.timestamp()
    for session_id, vital, received, value in rows:
        if session_id is None:
            continue  # never: the query selects open sessions' samples
        bucket = sums[(session_id, vital, int((received.timestamp() - start) // bucket_s))]
        bucket[0] += value
        bucket[1] += 1
    by_session: dict[int, dict[str, Series]] = defaultdict(dict)
    for (session_id, vital, index), (total, count) in sorted(sums.items()):
        line = by_session[session_id].setdefault(vital, Series(t=[], v=[]))
        line.t.append(datetime.fromtimestamp(start + (index + 0.5) * bucket_s, since.tzinfo))
        line.v.append(round(total / count, 2))
    return [
        ChairSparklines(chair_id=chair_id, session_id=session_id, series=by_session[session_id])
        for session_id, chair_id in sorted(open_sessions.items(), key=lambda item: item[1])
    ]


def audio_paused_since(session: Session, site_id: int) -> dict[int, datetime]:
    """Open sessions whose latest pause-or-resume record is a pause, with its time."""
    rows = session.execute(
        select(Alarm.session_id, AlarmTransitionRecord.event, AlarmTransitionRecord.at)
        .join(Alarm, AlarmTransitionRecord.alarm_id == Alarm.id)
        .join(InfusionSession, Alarm.session_id == InfusionSession.id)
        .join(Chair, InfusionSession.chair_id == Chair.id)
        .where(
            Chair.site_id == site_id,
            InfusionSession.ended_at.is_(None),
            AlarmTransitionRecord.event.in_(("audio_paused", "audio_resumed")),
        )
        .order_by(AlarmTransitionRecord.at, AlarmTransitionRecord.id)
    )
    latest: dict[int, tuple[str, datetime]] = {}
    for session_id, event, at in rows:
        latest[session_id] = (event, at)
    return {sid: at for sid, (event, at) in latest.items() if event == "audio_paused"}
