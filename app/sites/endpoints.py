"""Site and chair routes: anyone signed in reads the sites they may see; admins add them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from app.auth.deps import Admin, NurseAtSite, SignedIn, record_act
from app.deps import get_db
from app.live.service import LiveService, get_live
from app.params import SiteId
from app.sites import repository
from app.sites.schemas import ChairIn, SiteDetailOut, SiteIn, SiteOut
from app.storage.db import Database
from app.timeutil import utcnow

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])


@router.get("", response_model=list[SiteOut])
async def list_sites(who: SignedIn, db: Annotated[Database, Depends(get_db)]) -> list[SiteOut]:
    """The sites the caller may see."""
    return [site for site in await db.read(repository.list_sites) if who.may_see(site.id)]


@router.get("/{site_id}", response_model=SiteDetailOut, responses={404: {}})
async def get_site(
    site_id: SiteId, _: NurseAtSite, db: Annotated[Database, Depends(get_db)]
) -> SiteDetailOut:
    """The site's chairs, their bound devices and open sessions."""
    return await db.read(repository.site_detail, site_id)


@router.post(
    "",
    response_model=SiteOut,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "A site of that name exists."}},
)
async def add_site(
    body: SiteIn, who: Admin, request: Request, db: Annotated[Database, Depends(get_db)]
) -> SiteOut:
    """Add a site (admin). Give people access to it with PATCH /api/v1/users/{id}."""
    site = await db.run(repository.add_site, body.name, utcnow())
    request.state.site_id = site.id
    await record_act(request, who, "site_created", target_type="site", target_id=site.id)
    return site


@router.post(
    "/{site_id}/chairs",
    response_model=SiteDetailOut,
    status_code=status.HTTP_201_CREATED,
    responses={404: {}, 409: {"description": "The site has a chair of that name."}},
)
async def add_chair(
    site_id: SiteId,
    body: ChairIn,
    who: Admin,
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    live: Annotated[LiveService, Depends(get_live)],
) -> SiteDetailOut:
    """Add a chair to a site (admin); every screen of the site resyncs to show it."""
    detail = await db.run(repository.add_chair, site_id, body.name, body.position)
    await live.reload_site(site_id)
    request.state.site_id = site_id
    chair_id = next(chair.id for chair in detail.chairs if chair.name == body.name)
    await record_act(request, who, "chair_created", target_type="chair", target_id=chair_id)
    return detail
