"""Session routes: check-in, events (phase changes, rate, notes), read back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.deps import get_session_service
from app.sessions.schemas import EventIn, SessionOut, SessionStart
from app.sessions.service import SessionService

router = APIRouter(prefix="/api/v1", tags=["sessions"])
Sessions = Annotated[SessionService, Depends(get_session_service)]


@router.post(
    "/chairs/{chair_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    responses={404: {"description": "Unknown chair."}, 409: {"description": "Chair occupied."}},
)
async def start_session(chair_id: int, request: SessionStart, sessions: Sessions) -> SessionOut:
    """Check a patient into a chair: a new session in phase `checked_in`."""
    return await sessions.start(chair_id, request)


@router.get("/sessions/{session_id}", response_model=SessionOut, responses={404: {}})
async def get_session(session_id: int, sessions: Sessions) -> SessionOut:
    return await sessions.get(session_id)


@router.post(
    "/sessions/{session_id}/events",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionOut,
    responses={
        404: {"description": "Unknown session."},
        409: {"description": "The event does not fit the session's phase."},
    },
)
async def record_event(session_id: int, event: EventIn, sessions: Sessions) -> SessionOut:
    """Record an event. baseline_start, infusion_start, infusion_stop and discharge move
    the phase (checked_in → baseline → infusion → recovery → discharged)."""
    return await sessions.record_event(session_id, event)
