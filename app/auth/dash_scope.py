"""The nurse station's view of the signed-in person, for the Dash callbacks.

The gate in front of Dash (`app.auth.web.SignedInGate`) puts who is signed in into a
request header that only it can set; these wrappers read it inside each callback, so the
screens list and open only the sites the person may see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import flask

from app.auth import repository
from app.auth.audit import AuditTrail
from app.auth.web import VIEWER_HEADER
from app.errors import NotFoundError
from app.storage.db import Database
from contracts.directory import ChairEntry, SiteDirectory, SiteEntry
from contracts.review import (
    AlarmLogEntry,
    AnnotationRequest,
    AnnotationView,
    PatientSessionRow,
    ReviewNotFound,
    ReviewSource,
    SessionListQuery,
    SessionPage,
    SessionReview,
    SessionSummary,
    SessionTrace,
    SiteOption,
)


@dataclass(frozen=True)
class Viewer:
    username: str
    display_name: str
    role: str
    site_ids: frozenset[int] | None  # None: every site

    def may_see(self, site_id: int) -> bool:
        return self.site_ids is None or site_id in self.site_ids

    @property
    def may_review(self) -> bool:
        """Past sessions are for clinicians and admins (roles nest)."""
        return self.role in ("clinician", "admin")


def current_viewer() -> Viewer:
    """Who the current Dash request is for; refuses when the gate did not say."""
    raw = flask.request.headers.get(VIEWER_HEADER)
    if not raw:
        raise PermissionError("no signed-in viewer on this request")
    data = json.loads(raw)
    sites = data["sites"]
    return Viewer(
        data["user"], data["name"], data["role"], None if sites is None else frozenset(sites)
    )


class ViewerScopedDirectory:
    """A `SiteDirectory` that shows each viewer only the sites they may see."""

    def __init__(self, inner: SiteDirectory) -> None:
        self._inner = inner

    def sites(self) -> list[SiteEntry]:
        viewer = current_viewer()
        return [site for site in self._inner.sites() if viewer.may_see(site.site_id)]

    def chairs(self, site_id: int) -> list[ChairEntry]:
        if not current_viewer().may_see(site_id):
            raise PermissionError(f"you may not see site {site_id}")
        return self._inner.chairs(site_id)


class ViewerScopedReviewSource:
    """A `ReviewSource` for clinicians and admins, of the sites they may see. Opening a
    session is recorded in the audit trail; annotations are the viewer's own."""

    def __init__(self, inner: ReviewSource, db: Database, audit: AuditTrail) -> None:
        self._inner = inner
        self._db = db
        self._audit = audit

    def _reviewer(self) -> Viewer:
        viewer = current_viewer()
        if not viewer.may_review:
            raise PermissionError("reviewing past sessions needs the clinician role")
        return viewer

    def _session(self, session_id: int) -> Viewer:
        viewer = self._reviewer()
        try:
            with self._db.read_session() as session:
                site_id = repository.site_of_session(session, session_id)
        except NotFoundError as exc:
            raise ReviewNotFound(exc.message) from exc
        if not viewer.may_see(site_id):
            raise PermissionError(f"you may not see site {site_id}")
        return viewer

    def _viewed(self, viewer: Viewer, session_id: int, what: str) -> None:
        self._audit.record_now(
            viewer.username,
            "session_viewed",
            target_type="session",
            target_id=session_id,
            detail={"view": what, "screen": "review page"},
        )

    def sites(self) -> list[SiteOption]:
        viewer = self._reviewer()
        return [site for site in self._inner.sites() if viewer.may_see(site.site_id)]

    def sessions(self, query: SessionListQuery) -> SessionPage:
        viewer = self._reviewer()
        if query.site_id is not None and not viewer.may_see(query.site_id):
            raise PermissionError(f"you may not see site {query.site_id}")
        return self._inner.sessions(replace(query, site_ids=viewer.site_ids))

    def summary(self, session_id: int) -> SessionSummary:
        viewer = self._session(session_id)
        self._viewed(viewer, session_id, "summary")
        return self._inner.summary(session_id)

    def trace(self, session_id: int, max_points: int) -> SessionTrace:
        viewer = self._session(session_id)
        self._viewed(viewer, session_id, "trace")
        return self._inner.trace(session_id, max_points)

    def review(self, session_id: int, max_points: int) -> SessionReview:
        viewer = self._session(session_id)
        self._viewed(viewer, session_id, "session page")
        return self._inner.review(session_id, max_points)

    def patient_sessions(self, patient_id: int) -> list[PatientSessionRow]:
        viewer = self._reviewer()
        rows = self._inner.patient_sessions(patient_id)
        visible = [row for row in rows if viewer.may_see(row.site_id)]
        for row in visible:  # their figures are on screen: as the API does, audit each
            self._viewed(viewer, row.session_id, "patient course")
        return visible

    def alarm_log(self, session_id: int) -> list[AlarmLogEntry]:
        viewer = self._session(session_id)
        self._viewed(viewer, session_id, "alarm log")
        return self._inner.alarm_log(session_id)

    def annotate(self, session_id: int, request: AnnotationRequest) -> AnnotationView:
        viewer = self._session(session_id)
        added = self._inner.annotate(session_id, replace(request, author=viewer.username))
        self._audit.record_now(
            viewer.username,
            "session_annotated",
            target_type="session",
            target_id=session_id,
            detail={"kind": added.kind, "alarm_id": request.alarm_id, "screen": "review page"},
        )
        return added
