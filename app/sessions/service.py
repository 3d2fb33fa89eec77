"""Session changes: stored first, then every screen of the site resyncs."""

from __future__ import annotations

from app.alarms.service import AlarmService
from app.live.service import LiveService
from app.sessions import repository
from app.sessions.schemas import EventIn, SessionOut, SessionStart
from app.storage.db import Database
from app.storage.models import SessionPhase
from app.timeutil import utcnow
from monitor.protocol import Phase


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
        await self._live.reload_site(out.site_id)
        await self._alarms.on_session_changed(session_id, Phase.CHECKED_IN, ended=False)
        return out

    async def record_event(self, session_id: int, event: EventIn, by: str) -> SessionOut:
        now = utcnow()
        site_id, phase = await self._db.run(
            repository.record_event, session_id, event, by, event.at or now, now
        )
        await self._live.reload_site(site_id)
        await self._alarms.on_session_changed(
            session_id, Phase(phase.value), ended=phase is SessionPhase.DISCHARGED
        )
        return await self.get(session_id)

    async def get(self, session_id: int) -> SessionOut:
        return await self._db.run(repository.session_out, session_id)
