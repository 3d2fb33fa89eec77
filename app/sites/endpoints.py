"""Read-only site and chair routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.deps import NurseAtSite, SignedIn
from app.deps import get_db
from app.params import SiteId
from app.sites import repository
from app.sites.schemas import SiteDetailOut, SiteOut
from app.storage.db import Database

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])


@router.get("", response_model=list[SiteOut])
async def list_sites(who: SignedIn, db: Annotated[Database, Depends(get_db)]) -> list[SiteOut]:
    """The sites the caller may see."""
    return [site for site in await db.run(repository.list_sites) if who.may_see(site.id)]


@router.get("/{site_id}", response_model=SiteDetailOut, responses={404: {}})
async def get_site(
    site_id: SiteId, _: NurseAtSite, db: Annotated[Database, Depends(get_db)]
) -> SiteDetailOut:
    """The site's chairs, their bound devices and open sessions."""
    return await db.run(repository.site_detail, site_id)
