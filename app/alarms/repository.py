"""Alarm persistence: the current state of each alarm and every transition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.events import AlarmOut
from app.storage.models import (
    Alarm,
    AlarmTransitionRecord,
    Chair,
    InfusionSession,
    LimitOverrideRecord,
    SessionBaseline,
)
from monitor.lifecycle import AlarmRecord, AlarmState, AlarmTransition
from monitor.overrides import LimitOverride
from monitor.protocol import Phase


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def alarm_out(row: Alarm) -> AlarmOut:
    """A stored alarm as the API shows it."""
    return AlarmOut.of(row.record(), row.chair_id)


@dataclass(frozen=True, slots=True)
class TransitionWrite:
    """An alarm transition waiting in the outbox, with the chair and site it is on."""

    transition: AlarmTransition
    chair_id: int
    site_id: int


@dataclass(frozen=True, slots=True)
class BaselineWrite:
    """A session baseline the engine derived, waiting in the outbox."""

    session_id: int
    vital: str
    value: float
    at: datetime


AlarmWrite = TransitionWrite | BaselineWrite


def store_writes(session: Session, writes: Sequence[AlarmWrite]) -> None:
    """Store the outbox's writes in order, in one transaction, idempotently: a transition
    already stored (the same alarm, event and time; a retry after a commit whose answer was
    lost, or a replayed journal) is skipped, and a baseline is set, not added."""
    stored = _stored_transition_keys(
        session, {w.transition.alarm_id for w in writes if isinstance(w, TransitionWrite)}
    )
    rows: dict[str, Alarm] = {}
    for write in writes:
        if isinstance(write, BaselineWrite):
            _set_baseline(session, write.session_id, write.vital, write.value, write.at)
        else:
            _add_transition(session, write.transition, write.chair_id, rows, stored)
    session.commit()


def store_transitions(
    session: Session, transitions: list[AlarmTransition], chair_of: dict[str, int]
) -> list[int]:
    """Make each alarm's row its latest record, keep every transition, commit; returns the
    chair each transition's alarm is on. Idempotent, as `store_writes`."""
    stored = _stored_transition_keys(session, {t.alarm_id for t in transitions})
    rows: dict[str, Alarm] = {}
    for transition in transitions:
        _add_transition(session, transition, chair_of[transition.session_key], rows, stored)
    chairs = [rows[t.alarm_id].chair_id for t in transitions]
    session.commit()
    return chairs


TransitionKey = tuple[str, str, datetime]  # alarm id, event, time: unique in the schema


def _stored_transition_keys(session: Session, alarm_ids: set[str]) -> set[TransitionKey]:
    if not alarm_ids:
        return set()
    rows = session.execute(
        select(
            AlarmTransitionRecord.alarm_id, AlarmTransitionRecord.event, AlarmTransitionRecord.at
        ).where(AlarmTransitionRecord.alarm_id.in_(alarm_ids))
    )
    return {(alarm_id, event, at) for alarm_id, event, at in rows}


def _add_transition(
    session: Session,
    transition: AlarmTransition,
    chair_id: int,
    rows: dict[str, Alarm],
    stored: set[TransitionKey],
) -> None:
    at = to_datetime(transition.time)
    row = rows.get(transition.alarm_id) or session.get(Alarm, transition.alarm_id)
    key = (transition.alarm_id, transition.event.value, at)
    if key in stored:  # already there: the row already followed it, or a later change
        if row is not None:
            rows[transition.alarm_id] = row
        return
    stored.add(key)
    if row is None:
        row = Alarm.of(transition, chair_id)
        session.add(row)
    else:
        row.follow(transition)
    rows[transition.alarm_id] = row
    session.add(
        AlarmTransitionRecord(
            alarm_id=transition.alarm_id,
            rule_id=transition.rule_id,
            event=transition.event.value,
            state=transition.state.value,
            priority=transition.priority.value,
            at=at,
            value=transition.reading,
            limit_value=transition.limit,
            text=transition.text,
            actor=transition.actor,
            condition_active=transition.condition_active,
            audio_paused=transition.audio_paused,
        )
    )


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


def active_alarm_records(session: Session) -> list[AlarmRecord]:
    """The latest state of every alarm not yet cleared, as records the engine restores."""
    rows = session.scalars(select(Alarm).where(Alarm.state != AlarmState.CLEARED.value))
    return [row.record() for row in rows]


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
    _set_baseline(session, session_id, vital, value, at)
    session.commit()


def _set_baseline(
    session: Session, session_id: int, vital: str, value: float, at: datetime
) -> None:
    row = session.scalar(
        select(SessionBaseline).where(
            SessionBaseline.session_id == session_id, SessionBaseline.vital == vital
        )
    )
    if row is None:
        session.add(SessionBaseline(session_id=session_id, vital=vital, value=value, set_at=at))
        session.flush()  # a second baseline of the same vital in this transaction finds it
    else:
        row.value, row.set_at = value, at


def stored_baselines(session: Session) -> list[tuple[int, str, float]]:
    """(session id, vital, value) of every open session's baselines."""
    rows = session.execute(
        select(SessionBaseline.session_id, SessionBaseline.vital, SessionBaseline.value)
        .join(InfusionSession, InfusionSession.id == SessionBaseline.session_id)
        .where(InfusionSession.ended_at.is_(None))
    )
    return [(sid, vital, value) for sid, vital, value in rows]
