"""Read-only site and chair routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.deps import get_db
from app.sites import repository
from app.sites.schemas import SiteDetailOut, SiteOut
from app.storage.db import Database

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])


@router.get("", response_model=list[SiteOut])
async def list_sites(db: Annotated[Database, Depends(get_db)]) -> list[SiteOut]:
    return await db.run(repository.list_sites)


@router.get("/{site_id}", response_model=SiteDetailOut, responses={404: {}})
async def get_site(site_id: int, db: Annotated[Database, Depends(get_db)]) -> SiteDetailOut:
    """The site's chairs, their bound devices and open sessions."""
    return await db.run(repository.site_detail, site_id)
