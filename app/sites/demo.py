"""The demo clinic: one site, simulated chairs with patients in every phase of a session."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.storage.models import (
    Chair,
    Device,
    EventKind,
    InfusionSession,
    Patient,
    SessionEvent,
    SessionPhase,
    Site,
)
from app.timeutil import utcnow

DEMO_SITE = "Demo clinic"
DEMO_DEVICE_PREFIX = "demo-monitor-"

_INITIALS = ["A.B.", "C.D.", "E.F.", "G.H.", "J.K.", "L.M.", "N.P.", "R.S.", "T.V.", "W.Y."]
# Minutes since check-in, and the phase the demo patient is in by then.
_TIMELINE = [
    (5, SessionPhase.BASELINE),
    (25, SessionPhase.INFUSION),
    (40, SessionPhase.INFUSION),
    (55, SessionPhase.INFUSION),
    (75, SessionPhase.RECOVERY),
    (100, SessionPhase.RECOVERY),
    (2, SessionPhase.CHECKED_IN),
    (30, SessionPhase.INFUSION),
]


def device_identifier(index: int) -> str:
    return f"{DEMO_DEVICE_PREFIX}{index:02d}"


def seed_demo(session: Session, chairs: int = 8) -> int:
    """Create or complete the demo site with `chairs` chairs and return its id; idempotent."""
    now = utcnow()
    site = session.scalar(select(Site).where(Site.name == DEMO_SITE))
    if site is None:
        site = Site(name=DEMO_SITE, created_at=now)
        session.add(site)
        session.flush()
    existing = {chair.position: chair for chair in site.chairs}
    for index in range(1, chairs + 1):
        if index in existing:
            continue
        chair = Chair(site_id=site.id, name=f"Chair {index}", position=index)
        session.add(chair)
        session.flush()
        device = session.scalar(select(Device).where(Device.identifier == device_identifier(index)))
        if device is None:
            session.add(
                Device(identifier=device_identifier(index), chair_id=chair.id, created_at=now)
            )
        else:
            device.chair_id = chair.id
        _start_session(session, chair, index, now)
    session.commit()
    return site.id


def _start_session(session: Session, chair: Chair, index: int, now: datetime) -> None:
    minutes, phase = _TIMELINE[(index - 1) % len(_TIMELINE)]
    pseudonym = f"DEMO-{index:04d}"
    patient = session.scalar(select(Patient).where(Patient.pseudonym == pseudonym))
    if patient is None:
        patient = Patient(
            pseudonym=pseudonym,
            initials=_INITIALS[(index - 1) % len(_INITIALS)],
            weight_kg=60.0 + (index * 7) % 35,
            birth_year=1960 + (index * 11) % 40,
        )
        session.add(patient)
        session.flush()
    checked_in = now - timedelta(minutes=minutes)
    infusion = InfusionSession(
        chair_id=chair.id, patient_id=patient.id, phase=phase, started_at=checked_in
    )
    session.add(infusion)
    session.flush()
    events = [(EventKind.CHECK_IN, checked_in)]
    if phase in (SessionPhase.INFUSION, SessionPhase.RECOVERY):
        events.append((EventKind.INFUSION_START, checked_in + timedelta(minutes=12)))
    if phase is SessionPhase.RECOVERY:
        events.append((EventKind.INFUSION_STOP, checked_in + timedelta(minutes=52)))
    for kind, at in events:
        session.add(
            SessionEvent(
                session_id=infusion.id, kind=kind, at=at, recorded_by="demo", recorded_at=now
            )
        )


def running_sessions(session: Session, site_id: int) -> dict[int, tuple[str, datetime]]:
    """Position → (phase, check-in time) of each chair of the site with a session under way,
    so that the demo can start each simulated chair where its seeded session stands. When a
    chair has several open sessions, the latest one wins."""
    query = (
        select(Chair.position, InfusionSession.phase, InfusionSession.started_at)
        .join(InfusionSession, InfusionSession.chair_id == Chair.id)
        .where(Chair.site_id == site_id, InfusionSession.ended_at.is_(None))
        .order_by(InfusionSession.started_at)
    )
    return {position: (str(phase), started) for position, phase, started in session.execute(query)}
