"""Session changes: stored first, then every screen of the site resyncs."""

from __future__ import annotations

from app.live.service import LiveService
from app.sessions import repository
from app.sessions.schemas import EventIn, SessionOut, SessionStart
from app.storage.db import Database
from app.timeutil import utcnow


class SessionService:
    def __init__(self, db: Database, live: LiveService) -> None:
        self._db = db
        self._live = live

    async def start(self, chair_id: int, request: SessionStart) -> SessionOut:
        now = utcnow()
        session_id = await self._db.run(
            repository.start_session,
            chair_id,
            request.patient,
            request.recorded_by,
            request.at or now,
            now,
        )
        out = await self.get(session_id)
        await self._live.reload_site(out.site_id)
        return out

    async def record_event(self, session_id: int, event: EventIn) -> SessionOut:
        now = utcnow()
        site_id, _phase = await self._db.run(
            repository.record_event, session_id, event, event.at or now, now
        )
        await self._live.reload_site(site_id)
        return await self.get(session_id)

    async def get(self, session_id: int) -> SessionOut:
        return await self._db.run(repository.session_out, session_id)
