"""Alarm persistence: the current state of each alarm and every transition."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.alarms.schemas import AlarmOut
from app.storage.models import (
    Alarm,
    AlarmTransitionRecord,
    Chair,
    InfusionSession,
    LimitOverrideRecord,
    SessionBaseline,
)
from monitor.lifecycle import AlarmState, AlarmTransition, TransitionEvent
from monitor.overrides import LimitOverride
from monitor.protocol import AlarmKind, Phase, Priority


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def alarm_out(row: Alarm) -> AlarmOut:
    return AlarmOut(
        alarm_id=row.id,
        session_id=row.session_id,
        chair_id=row.chair_id,
        rule_id=row.rule_id,
        kind=row.kind,
        priority=row.priority,
        state=row.state,
        text=row.text,
        value=row.value,
        limit=row.limit_value,
        condition_active=row.condition_active,
        audio_paused=row.audio_paused,
        raised_at=row.raised_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        cleared_at=row.cleared_at,
        escalate_at=row.escalate_at,
    )


def store_transitions(
    session: Session, transitions: list[AlarmTransition], chair_of: dict[str, int]
) -> list[tuple[AlarmTransition, AlarmOut]]:
    """Apply each transition to its alarm row, keep the transition, commit."""
    rows: dict[str, Alarm] = {}
    for transition in transitions:
        row = rows.get(transition.alarm_id) or session.get(Alarm, transition.alarm_id)
        at = to_datetime(transition.time)
        if row is None:
            row = Alarm(
                id=transition.alarm_id,
                session_id=int(transition.session_key),
                chair_id=chair_of[transition.session_key],
                rule_id=transition.rule_id,
                kind=transition.kind.value,
                text=transition.text,
                value=transition.value,
                limit_value=transition.limit,
                raised_at=to_datetime(transition.raised_at),
                protocol_version=transition.protocol_version,
            )
            session.add(row)
        rows[transition.alarm_id] = row
        row.priority = transition.priority.value
        row.state = transition.state.value
        row.condition_active = transition.condition_active
        row.audio_paused = transition.audio_paused
        row.escalate_at = (
            to_datetime(transition.escalate_at) if transition.escalate_at is not None else None
        )
        if transition.event is TransitionEvent.ACKNOWLEDGED:
            row.acknowledged_at = at
            row.acknowledged_by = transition.actor
        if transition.state is AlarmState.CLEARED:
            row.cleared_at = at
        session.add(
            AlarmTransitionRecord(
                alarm_id=transition.alarm_id,
                event=transition.event.value,
                state=transition.state.value,
                priority=transition.priority.value,
                at=at,
                value=transition.value,
                limit_value=transition.limit,
                text=transition.text,
                actor=transition.actor,
                condition_active=transition.condition_active,
                audio_paused=transition.audio_paused,
            )
        )
    session.flush()
    out = [(t, alarm_out(rows[t.alarm_id])) for t in transitions]
    session.commit()
    return out


def open_sessions(session: Session) -> list[tuple[int, int, int, Phase]]:
    """(session id, chair id, site id, phase) of every open session."""
    rows = session.execute(
        select(InfusionSession.id, InfusionSession.chair_id, Chair.site_id, InfusionSession.phase)
        .join(Chair, Chair.id == InfusionSession.chair_id)
        .where(InfusionSession.ended_at.is_(None))
    )
    return [(sid, chair, site, Phase(phase.value)) for sid, chair, site, phase in rows]


def session_chair(session: Session, session_id: int) -> tuple[int, int, Phase, bool] | None:
    """(chair id, site id, phase, open) of a session, or None."""
    row = session.execute(
        select(
            InfusionSession.chair_id,
            Chair.site_id,
            InfusionSession.phase,
            InfusionSession.ended_at,
        )
        .join(Chair, Chair.id == InfusionSession.chair_id)
        .where(InfusionSession.id == session_id)
    ).one_or_none()
    if row is None:
        return None
    chair_id, site_id, phase, ended_at = row
    return chair_id, site_id, Phase(phase.value), ended_at is None


def active_alarm_records(session: Session) -> list[AlarmTransition]:
    """The latest state of every alarm not yet cleared, as records the engine restores."""
    records = []
    for row in session.scalars(select(Alarm).where(Alarm.state != AlarmState.CLEARED.value)):
        records.append(
            AlarmTransition(
                alarm_id=row.id,
                session_key=str(row.session_id),
                rule_id=row.rule_id,
                kind=AlarmKind(row.kind),
                priority=Priority(row.priority),
                event=TransitionEvent.RAISED,
                state=AlarmState(row.state),
                time=to_epoch(row.raised_at),
                value=row.value,
                limit=row.limit_value,
                text=row.text,
                actor=row.acknowledged_by,
                condition_active=row.condition_active,
                audio_paused=row.audio_paused,
                raised_at=to_epoch(row.raised_at),
                escalate_at=to_epoch(row.escalate_at) if row.escalate_at else None,
                protocol_version=row.protocol_version,
            )
        )
    return records


def list_alarms(
    session: Session,
    *,
    site_id: int | None = None,
    session_id: int | None = None,
    active_only: bool = False,
    limit: int = 500,
) -> list[AlarmOut]:
    query = select(Alarm).order_by(Alarm.raised_at.desc()).limit(limit)
    if site_id is not None:
        query = query.join(Chair, Chair.id == Alarm.chair_id).where(Chair.site_id == site_id)
    if session_id is not None:
        query = query.where(Alarm.session_id == session_id)
    if active_only:
        query = query.where(Alarm.state != AlarmState.CLEARED.value)
    return [alarm_out(row) for row in session.scalars(query)]


def store_override(session: Session, record: LimitOverride) -> None:
    session.add(
        LimitOverrideRecord(
            session_id=int(record.session_key),
            rule_id=record.rule_id,
            old_value=record.old,
            new_value=record.new,
            changed_by=record.who,
            reason=record.why,
            at=to_datetime(record.time),
            reverted=record.reverted,
            protocol_version=record.protocol_version,
        )
    )
    session.commit()


def stored_overrides(session: Session) -> list[LimitOverride]:
    """Every override of every open session, oldest first, to re-apply after a restart."""
    rows = session.scalars(
        select(LimitOverrideRecord)
        .join(InfusionSession, InfusionSession.id == LimitOverrideRecord.session_id)
        .where(InfusionSession.ended_at.is_(None))
        .order_by(LimitOverrideRecord.at, LimitOverrideRecord.id)
    )
    return [
        LimitOverride(
            session_key=str(row.session_id),
            rule_id=row.rule_id,
            old=row.old_value,
            new=row.new_value,
            who=row.changed_by,
            why=row.reason,
            time=to_epoch(row.at),
            protocol_version=row.protocol_version,
            reverted=row.reverted,
        )
        for row in rows
    ]


def store_baseline(
    session: Session, session_id: int, vital: str, value: float, at: datetime
) -> None:
    row = session.scalar(
        select(SessionBaseline).where(
            SessionBaseline.session_id == session_id, SessionBaseline.vital == vital
        )
    )
    if row is None:
        session.add(SessionBaseline(session_id=session_id, vital=vital, value=value, set_at=at))
    else:
        row.value, row.set_at = value, at
    session.commit()


def stored_baselines(session: Session) -> list[tuple[int, str, float]]:
    """(session id, vital, value) of every open session's baselines."""
    rows = session.execute(
        select(SessionBaseline.session_id, SessionBaseline.vital, SessionBaseline.value)
        .join(InfusionSession, InfusionSession.id == SessionBaseline.session_id)
        .where(InfusionSession.ended_at.is_(None))
    )
    return [(sid, vital, value) for sid, vital, value in rows]
