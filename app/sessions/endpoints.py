"""Session routes: check-in, events (phase changes, rate, notes), read back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from app.auth.deps import ClinicianOnPatient, NurseOnChair, NurseOnSession, deny, record_act
from app.deps import get_db
from app.errors import Forbidden
from app.live.service import LiveService, get_live
from app.params import ChairId, PatientId, SessionId
from app.sessions import repository as session_repository
from app.sessions.schemas import (
    EventIn,
    NibpIntervalIn,
    NibpIntervalOut,
    PatientOut,
    PatientPatch,
    SessionOut,
    SessionStart,
)
from app.sessions.service import SessionService, get_session_service
from app.storage.db import Database

router = APIRouter(prefix="/api/v1", tags=["sessions"])
Sessions = Annotated[SessionService, Depends(get_session_service)]
Db = Annotated[Database, Depends(get_db)]
Live = Annotated[LiveService, Depends(get_live)]


@router.post(
    "/chairs/{chair_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    responses={
        403: {"description": "The pseudonym is a patient of a site the caller may not see."},
        404: {"description": "Unknown chair."},
        409: {"description": "Chair occupied, or the patient is on record with other details."},
    },
)
async def start_session(
    chair_id: ChairId, body: SessionStart, who: NurseOnChair, sessions: Sessions, request: Request
) -> SessionOut:
    """Check a patient into a chair: a new session in phase `checked_in`. The pseudonym
    names a new patient, or an existing one of a site the caller may see (403 otherwise)
    whose details must match those given (409 otherwise): starting a session never
    changes a patient (`PATCH /api/v1/patients/{patient_id}` does)."""
    try:
        out = await sessions.start(chair_id, body, who.username, who.site_ids)
    except Forbidden as refused:
        await deny(request, who, refused.message, getattr(request.state, "site_id", None))
        raise
    await record_act(request, who, "session_started", target_type="session", target_id=out.id)
    return out


@router.get("/sessions/{session_id}", response_model=SessionOut, responses={404: {}})
async def get_session(
    session_id: SessionId, who: NurseOnSession, sessions: Sessions, request: Request
) -> SessionOut:
    out = await sessions.get(session_id)
    if out.ended_at is not None:
        # Looking back at a finished session is a view of health records: it is audited.
        await record_act(request, who, "session_viewed", target_type="session", target_id=out.id)
    return out


@router.post(
    "/sessions/{session_id}/events",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    responses={
        404: {"description": "Unknown session."},
        409: {"description": "The event does not fit the session's phase."},
    },
)
async def record_event(
    session_id: SessionId, event: EventIn, who: NurseOnSession, sessions: Sessions, request: Request
) -> SessionOut:
    """Record an event. baseline_start, infusion_start, infusion_stop and discharge move
    the phase (checked_in → baseline → infusion → recovery → discharged)."""
    out = await sessions.record_event(session_id, event, who.username)
    await record_act(
        request,
        who,
        "event_recorded",
        target_type="session",
        target_id=session_id,
        detail={"kind": event.kind.value},
    )
    return out


@router.patch(
    "/patients/{patient_id}",
    response_model=PatientOut,
    tags=["patients"],
    responses={404: {"description": "Unknown patient."}},
)
async def change_patient(
    patient_id: PatientId,
    body: PatientPatch,
    who: ClinicianOnPatient,
    db: Db,
    live: Live,
    request: Request,
) -> PatientOut:
    """Correct a patient's initials, weight or birth year: an act of its own, audited, for
    a clinician who may see a site where the patient had a session. Only the fields given
    change; the screens showing the patient's open sessions follow."""
    changed = await db.run(session_repository.change_patient, patient_id, body)
    await record_act(
        request,
        who,
        "patient_changed",
        target_type="patient",
        target_id=patient_id,
        detail={"fields": changed.fields},  # which, never the values
    )
    for site_id in changed.open_sites:
        await live.reload_site(site_id)
    return changed.patient


@router.put(
    "/sessions/{session_id}/nibp-interval",
    response_model=NibpIntervalOut,
    responses={
        404: {"description": "Unknown session."},
        409: {"description": "The session was discharged."},
        422: {"description": "`seconds` is not one of the cuff intervals."},
    },
)
async def set_nibp_interval(
    session_id: SessionId,
    body: NibpIntervalIn,
    who: NurseOnSession,
    sessions: Sessions,
    request: Request,
) -> NibpIntervalOut:
    """Set the NIBP interval the session's monitor cycles at. It takes effect at once: the
    NIBP-stale alarm waits this interval plus its grace, and every screen's "next cuff"
    countdown follows it. Kept across a restart; audited with the old and new value."""
    previous, schedule = await sessions.set_nibp_interval(session_id, body.seconds)
    await record_act(
        request,
        who,
        "nibp_interval_set",
        target_type="session",
        target_id=session_id,
        detail={"old_s": previous, "new_s": body.seconds},
    )
    return NibpIntervalOut(
        session_id=session_id,
        nibp_interval_s=schedule.setting_s,
        interval_s=schedule.interval_s,
        stale_after_s=schedule.stale_after_s,
    )
