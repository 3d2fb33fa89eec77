"""Queries about sites and chairs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import ConflictError, NotFoundError
from app.live.repository import load_site_view
from app.sites.schemas import ChairOut, SessionOut, SiteDetailOut, SiteOut
from app.storage.models import Chair, Site


def list_sites(session: Session) -> list[SiteOut]:
    rows = session.execute(
        select(Site.id, Site.name, func.count(Chair.id))
        .outerjoin(Chair, Chair.site_id == Site.id)
        .group_by(Site.id, Site.name)
        .order_by(Site.name)
    )
    return [SiteOut(id=site_id, name=name, chair_count=count) for site_id, name, count in rows]


def chair_names(session: Session, site_id: int) -> list[tuple[int, str]]:
    """(id, name) of the site's chairs in display order: one indexed query, no live state."""
    rows = session.execute(
        select(Chair.id, Chair.name)
        .where(Chair.site_id == site_id)
        .order_by(Chair.position, Chair.id)
    ).all()
    if not rows and session.get(Site, site_id) is None:
        raise NotFoundError(f"unknown site {site_id}")
    return [(chair_id, name) for chair_id, name in rows]


def site_detail(session: Session, site_id: int) -> SiteDetailOut:
    view = load_site_view(session, site_id)
    if view is None:
        raise NotFoundError(f"unknown site {site_id}")
    chairs = sorted(view.chairs.values(), key=lambda c: (c.position, c.chair_id))
    return SiteDetailOut(
        id=view.site_id,
        name=view.name,
        chairs=[
            ChairOut(
                id=chair.chair_id,
                name=chair.name,
                position=chair.position,
                devices=chair.devices,
                session=None
                if chair.session is None
                else SessionOut(
                    id=chair.session.session_id,
                    phase=chair.session.phase,
                    patient_initials=chair.session.patient_initials,
                    started_at=chair.session.started_at,
                ),
            )
            for chair in chairs
        ],
    )


def add_site(session: Session, name: str, now: datetime) -> SiteOut:
    site = Site(name=name, created_at=now)
    session.add(site)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"a site named {name!r} exists") from exc
    return SiteOut(id=site.id, name=site.name, chair_count=0)


def add_chair(session: Session, site_id: int, name: str, position: int | None) -> SiteDetailOut:
    if session.get(Site, site_id) is None:
        raise NotFoundError(f"no site with id {site_id}")
    if position is None:
        last = session.scalar(select(func.max(Chair.position)).where(Chair.site_id == site_id))
        position = (last or 0) + 1
    session.add(Chair(site_id=site_id, name=name, position=position))
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"site {site_id} already has a chair named {name!r}") from exc
    return site_detail(session, site_id)
