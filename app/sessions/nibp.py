"""Database work for a session's NIBP interval (`sessions.nibp_interval_s`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.errors import ConflictError, NotFoundError
from app.storage.models import InfusionSession


def store_nibp_interval(session: Session, session_id: int, seconds: float | None) -> float | None:
    """Set an open session's NIBP interval (None: the phase's default); returns the old one."""
    found = session.get(InfusionSession, session_id)
    if found is None:
        raise NotFoundError(f"unknown session {session_id}")
    if found.ended_at is not None:
        raise ConflictError(f"session {session_id} was discharged; its settings are final")
    old = found.nibp_interval_s
    found.nibp_interval_s = seconds
    session.commit()
    return old
