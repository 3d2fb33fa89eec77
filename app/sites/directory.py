"""The nurse station's read-only view of sites and chairs (see dashboard.directory)."""

from __future__ import annotations

from app.sites import repository
from app.storage.db import Database
from dashboard.directory import ChairEntry, SiteEntry


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
        with self._db.read_session() as session:
            detail = repository.site_detail(session, site_id)
        return [ChairEntry(chair.id, chair.name) for chair in detail.chairs]
