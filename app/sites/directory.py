"""The nurse station's read-only view of sites and chairs: implements `contracts.directory`."""

from __future__ import annotations

from app.sites import repository
from app.storage.db import Database
from contracts.directory import ChairEntry, SiteEntry


class DatabaseSiteDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db

    def sites(self) -> list[SiteEntry]:
        with self._db.read_session() as session:
            return [
                SiteEntry(site.id, site.name, site.chair_count)
                for site in repository.list_sites(session)
            ]

    def chairs(self, site_id: int) -> list[ChairEntry]:
        """The site's chairs in display order (a plain query: no sessions, no vitals)."""
        with self._db.read_session() as session:
            rows = repository.chair_names(session, site_id)
        return [ChairEntry(chair_id, name) for chair_id, name in rows]
