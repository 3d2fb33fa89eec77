"""Sites and chairs, as the nurse station needs them to lay out its screens.

The server implements `SiteDirectory` (`app.sites.directory.DatabaseSiteDirectory`, scoped
to the signed-in person by `app.auth.dash_scope`); the composition root (`vigil.server`)
hands it to the dashboard. Live values never come through here: they arrive over the
site's websocket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SiteEntry:
    site_id: int
    name: str
    chair_count: int


@dataclass(frozen=True)
class ChairEntry:
    chair_id: int
    name: str


class SiteDirectory(Protocol):
    def sites(self) -> list[SiteEntry]: ...

    def chairs(self, site_id: int) -> list[ChairEntry]:
        """Chairs of the site in display order; raises for an unknown site."""
        ...
