"""Database work for sessions and their events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.repository import sites_of_patient
from app.errors import ConflictError, FieldProblem, Forbidden, InvalidRequest, NotFoundError
from app.sessions.schemas import (
    EventIn,
    EventOut,
    PatientIn,
    PatientOut,
    PatientPatch,
    SessionOut,
)
from app.storage.models import (
    Chair,
    EventKind,
    InfusionSession,
    Patient,
    SessionEvent,
    SessionPhase,
)

# The phase an event moves a session to, and the phases it may come from.
PHASE_CHANGES: dict[EventKind, tuple[SessionPhase, frozenset[SessionPhase]]] = {
    EventKind.BASELINE_START: (SessionPhase.BASELINE, frozenset({SessionPhase.CHECKED_IN})),
    EventKind.INFUSION_START: (
        SessionPhase.INFUSION,
        frozenset({SessionPhase.CHECKED_IN, SessionPhase.BASELINE}),
    ),
    EventKind.INFUSION_STOP: (SessionPhase.RECOVERY, frozenset({SessionPhase.INFUSION})),
    EventKind.DISCHARGE: (
        SessionPhase.DISCHARGED,
        frozenset(set(SessionPhase) - {SessionPhase.DISCHARGED}),
    ),
}
# Events that only make sense while the drug is running.
DURING_INFUSION = {EventKind.RATE_CHANGE, EventKind.INFUSION_PAUSE, EventKind.INFUSION_RESUME}


def _session(session: Session, session_id: int) -> InfusionSession:
    found = session.get(InfusionSession, session_id)
    if found is None:
        raise NotFoundError(f"unknown session {session_id}")
    return found


def session_out(session: Session, session_id: int) -> SessionOut:
    found = _session(session, session_id)
    events = session.scalars(
        select(SessionEvent)
        .where(SessionEvent.session_id == session_id)
        .order_by(SessionEvent.at, SessionEvent.id)
    )
    return SessionOut(
        id=found.id,
        chair_id=found.chair_id,
        site_id=found.chair.site_id,
        patient_id=found.patient_id,
        patient_initials=found.patient.initials,
        phase=found.phase,
        started_at=found.started_at,
        ended_at=found.ended_at,
        nibp_interval_s=found.nibp_interval_s,
        events=[
            EventOut(
                id=e.id,
                kind=e.kind,
                at=e.at,
                recorded_by=e.recorded_by,
                recorded_at=e.recorded_at,
                value=e.value,
                unit=e.unit,
                note=e.note,
            )
            for e in events
        ],
    )


def start_session(
    session: Session,
    chair_id: int,
    patient_in: PatientIn,
    recorded_by: str,
    at: datetime,
    now: datetime,
    visible_sites: frozenset[int] | None = None,
) -> int:
    """Open a session on the chair for the patient of that pseudonym, made if new.

    An existing patient is only referenced, never changed: it must be a patient of a site
    in `visible_sites` (the caller's; None: every site), or Forbidden, and the details
    given must match its own, or ConflictError (changing them is `change_patient`).
    """
    chair = session.get(Chair, chair_id)
    if chair is None:
        raise NotFoundError(f"unknown chair {chair_id}")
    occupied = session.scalar(
        select(InfusionSession.id).where(
            InfusionSession.chair_id == chair_id, InfusionSession.ended_at.is_(None)
        )
    )
    if occupied is not None:
        raise ConflictError(
            f"chair {chair.name!r} already has open session {occupied}; discharge it first"
        )
    patient = session.scalar(select(Patient).where(Patient.pseudonym == patient_in.pseudonym))
    if patient is None:
        patient = Patient(
            pseudonym=patient_in.pseudonym,
            initials=patient_in.initials,
            weight_kg=patient_in.weight_kg,
            birth_year=patient_in.birth_year,
        )
        session.add(patient)
    else:
        if visible_sites is not None and not sites_of_patient(session, patient.id) & visible_sites:
            raise Forbidden(
                "this pseudonym is a patient of a site you may not see: check the pseudonym"
            )
        differing = _differing_details(patient, patient_in)
        if differing:
            raise ConflictError(
                f"patient {patient.id} is on record with another {', '.join(differing)}: check "
                f"the pseudonym, or have a clinician correct the patient's details first "
                f"(PATCH /api/v1/patients/{patient.id})"
            )
    session.flush()
    created = InfusionSession(
        chair_id=chair_id, patient_id=patient.id, phase=SessionPhase.CHECKED_IN, started_at=at
    )
    session.add(created)
    session.flush()
    session.add(
        SessionEvent(
            session_id=created.id,
            kind=EventKind.CHECK_IN,
            at=at,
            recorded_by=recorded_by,
            recorded_at=now,
        )
    )
    session.commit()
    return created.id


def _differing_details(patient: Patient, given: PatientIn) -> list[str]:
    """The details given for an existing patient that are not its own (omitted: none)."""
    differing = []
    if given.initials != patient.initials:
        differing.append("initials")
    if given.weight_kg is not None and given.weight_kg != patient.weight_kg:
        differing.append("weight")
    if given.birth_year is not None and given.birth_year != patient.birth_year:
        differing.append("birth year")
    return differing


@dataclass(frozen=True)
class PatientChange:
    patient: PatientOut
    fields: list[str]  # which details changed (their names, never their values)
    open_sites: list[int]  # sites where the patient has an open session, to refresh


def change_patient(session: Session, patient_id: int, change: PatientPatch) -> PatientChange:
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise NotFoundError(f"unknown patient {patient_id}")
    fields = []
    for name, value in change.model_dump(exclude_unset=True).items():
        if value is None and name == "initials":
            raise InvalidRequest([FieldProblem(("body", "initials"), "cannot be removed")])
        if getattr(patient, name) != value:
            setattr(patient, name, value)
            fields.append(name)
    session.commit()
    open_sites = session.scalars(
        select(Chair.site_id)
        .join(InfusionSession, InfusionSession.chair_id == Chair.id)
        .where(InfusionSession.patient_id == patient_id, InfusionSession.ended_at.is_(None))
        .distinct()
    )
    out = PatientOut(
        id=patient.id,
        pseudonym=patient.pseudonym,
        initials=patient.initials,
        weight_kg=patient.weight_kg,
        birth_year=patient.birth_year,
    )
    return PatientChange(out, fields, sorted(open_sites))


def record_event(
    session: Session, session_id: int, event: EventIn, by: str, at: datetime, now: datetime
) -> tuple[int, SessionPhase]:
    """Store the event, move the phase if it says so; returns (site id, phase after)."""
    found = _session(session, session_id)
    if found.ended_at is not None:
        raise ConflictError(f"session {session_id} was discharged; it takes no more events")
    change = PHASE_CHANGES.get(event.kind)
    if change is not None:
        target, allowed = change
        if found.phase not in allowed:
            raise ConflictError(
                f"session {session_id} is in {found.phase.value}: {event.kind.value} is only "
                f"possible from {', '.join(sorted(p.value for p in allowed))}"
            )
        found.phase = target
        if target is SessionPhase.DISCHARGED:
            found.ended_at = at
    elif event.kind in DURING_INFUSION and found.phase is not SessionPhase.INFUSION:
        raise ConflictError(
            f"session {session_id} is in {found.phase.value}: "
            f"{event.kind.value} is only possible during the infusion"
        )
    session.add(
        SessionEvent(
            session_id=session_id,
            kind=event.kind,
            at=at,
            recorded_by=by,
            recorded_at=now,
            value=event.value,
            unit=event.unit,
            note=event.note,
        )
    )
    site_id = found.chair.site_id
    session.commit()
    return site_id, found.phase
