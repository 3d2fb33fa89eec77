"""Session changes: stored first, then that chair's live view and the alarm engine follow."""

from __future__ import annotations

from fastapi import Request

from app.alarms.nibp import NibpSchedule
from app.alarms.service import AlarmService
from app.live.service import LiveService
from app.live.views import SessionView
from app.sessions import repository
from app.sessions.nibp import store_nibp_interval
from app.sessions.schemas import EventIn, SessionOut, SessionStart
from app.storage.db import Database
from app.storage.models import EventKind, SessionPhase
from app.timeutil import utcnow
from monitor.protocol import Phase

# The `event` of the screens' session delta when a session's NIBP interval changed.
NIBP_INTERVAL_EVENT = "nibp_interval"


def live_session(out: SessionOut) -> SessionView | None:
    """What a nurse-station tile shows of a session; None once it has ended."""
    if out.ended_at is not None:
        return None
    infusion_starts = [e.at for e in out.events if e.kind is EventKind.INFUSION_START]
    return SessionView(
        out.id,
        out.phase.value,
        out.patient_initials,
        out.started_at,
        max(infusion_starts) if infusion_starts else None,
        out.nibp_interval_s,
    )


class SessionService:
    def __init__(self, db: Database, live: LiveService, alarms: AlarmService) -> None:
        self._db = db
        self._live = live
        self._alarms = alarms

    async def start(
        self,
        chair_id: int,
        request: SessionStart,
        by: str,
        visible_sites: frozenset[int] | None = None,
    ) -> SessionOut:
        """`visible_sites`: the caller's; an existing patient must be of one of them."""
        now = utcnow()
        session_id = await self._db.run(
            repository.start_session,
            chair_id,
            request.patient,
            by,
            request.at or now,
            now,
            visible_sites,
        )
        out = await self.get(session_id)
        await self._live.session_changed(
            out.site_id, out.chair_id, live_session(out), EventKind.CHECK_IN.value
        )
        await self._alarms.on_session_changed(session_id, Phase.CHECKED_IN, ended=False)
        return out

    async def record_event(self, session_id: int, event: EventIn, by: str) -> SessionOut:
        now = utcnow()
        await self._db.run(repository.record_event, session_id, event, by, event.at or now, now)
        out = await self.get(session_id)
        await self._live.session_changed(
            out.site_id, out.chair_id, live_session(out), event.kind.value
        )
        await self._alarms.on_session_changed(
            session_id, Phase(out.phase.value), ended=out.phase is SessionPhase.DISCHARGED
        )
        return out

    async def get(self, session_id: int) -> SessionOut:
        return await self._db.read(repository.session_out, session_id)

    async def set_nibp_interval(
        self, session_id: int, seconds: float | None
    ) -> tuple[float | None, NibpSchedule]:
        """Store the session's NIBP interval, put it in force in the alarm engine, show it on
        every screen of the site; returns the previous setting and what now applies."""
        previous = await self._db.run(store_nibp_interval, session_id, seconds)
        schedule = await self._alarms.set_nibp_interval(session_id, seconds)
        out = await self.get(session_id)
        await self._live.session_changed(
            out.site_id, out.chair_id, live_session(out), NIBP_INTERVAL_EVENT
        )
        return previous, schedule


async def get_session_service(request: Request) -> SessionService:
    """The app's SessionService (built by `create_app`), as a FastAPI dependency."""
    service: SessionService = request.app.state.sessions
    return service
